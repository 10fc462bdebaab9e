//! One test suite for every state backend: each test runs on memory and on RocksDB, and
//! snapshots cross from one kind to the other.

use super::backend::{StateBackend, StateDescriptor, read_snapshot};
use super::codec::WindowNs;
use super::memory::MemoryBackend;
use super::rocks::RocksDbBackend;
use super::typed::{KeyCtx, ListState, MapState, Timers, ValueState};

fn descriptors() -> Vec<StateDescriptor> {
    vec![
        ValueState::<WindowNs, i64>::descriptor("acc"),
        MapState::<WindowNs, String, u64>::descriptor("distinct"),
        ListState::<(), String>::descriptor("rows"),
        Timers::<WindowNs>::descriptor("timers"),
    ]
}

fn memory() -> (Box<dyn StateBackend>, Option<tempfile::TempDir>) {
    (Box::new(MemoryBackend::new(descriptors())), None)
}

fn rocks() -> (Box<dyn StateBackend>, Option<tempfile::TempDir>) {
    let dir = tempfile::tempdir().unwrap();
    let b = RocksDbBackend::open(&dir.path().join("db"), descriptors(), 32 << 20).unwrap();
    (Box::new(b), Some(dir))
}

type Factory = fn() -> (Box<dyn StateBackend>, Option<tempfile::TempDir>);
const BACKENDS: [(&str, Factory); 2] = [("memory", memory), ("rocksdb", rocks)];

fn k(key_group: u16, key: &[u8]) -> KeyCtx<'_> {
    KeyCtx { key_group, key }
}

const W1: WindowNs = WindowNs { start: 0, end: 10 };
const W2: WindowNs = WindowNs { start: 10, end: 20 };

#[test]
fn bytes_get_put_delete_and_ordered_scans() {
    for (name, make) in BACKENDS {
        let (mut b, _dir) = make();
        b.put(0, b"\x00\x01b", b"2").unwrap();
        b.put(0, b"\x00\x01a", b"1").unwrap();
        b.put(0, b"\x00\x02a", b"3").unwrap();
        b.put(0, b"\x00\x01\xff", b"4").unwrap();
        b.put(0, b"\x00\x01a", b"1'").unwrap();
        assert_eq!(b.get(0, b"\x00\x01a").unwrap(), Some(b"1'".to_vec()), "{name}");
        assert_eq!(b.get(1, b"\x00\x01a").unwrap(), None, "{name}: tables are separate");
        let keys: Vec<Vec<u8>> = b.prefix(0, b"\x00\x01").unwrap().map(|e| e.unwrap().0).collect();
        assert_eq!(keys, vec![b"\x00\x01a".to_vec(), b"\x00\x01b".to_vec(), b"\x00\x01\xff".to_vec()], "{name}");
        let keys: Vec<Vec<u8>> = b.range(0, b"\x00\x01b", Some(b"\x00\x02a")).unwrap().map(|e| e.unwrap().0).collect();
        assert_eq!(keys, vec![b"\x00\x01b".to_vec(), b"\x00\x01\xff".to_vec()], "{name}: end is exclusive");
        assert_eq!(b.range(0, b"\x00\x02", None).unwrap().count(), 1, "{name}");
        b.delete(0, b"\x00\x01b").unwrap();
        b.delete(0, b"\x00\x09").unwrap();
        assert_eq!(b.get(0, b"\x00\x01b").unwrap(), None, "{name}");
        assert_eq!(b.prefix(0, b"\x00").unwrap().count(), 3, "{name}");
    }
}

#[test]
fn typed_states() {
    for (name, make) in BACKENDS {
        let (mut b, _dir) = make();
        let b = b.as_mut();
        let acc = ValueState::<WindowNs, i64>::new(0);
        let distinct = MapState::<WindowNs, String, u64>::new(1);
        let rows = ListState::<(), String>::new(2);
        let key = k(3, b"customer-7");
        let other = k(3, b"customer-70");

        acc.put(b, key, &W1, &-5).unwrap();
        acc.put(b, key, &W2, &6).unwrap();
        acc.put(b, other, &W1, &100).unwrap();
        assert_eq!(acc.get(b, key, &W1).unwrap(), Some(-5), "{name}");
        acc.clear(b, key, &W1).unwrap();
        assert_eq!(acc.get(b, key, &W1).unwrap(), None, "{name}");
        assert_eq!(acc.get(b, other, &W1).unwrap(), Some(100), "{name}: a key that extends another is separate");

        for v in ["b", "a", "b", "c"] {
            let n = distinct.get(b, key, &W1, &v.to_string()).unwrap().unwrap_or(0);
            distinct.put(b, key, &W1, &v.to_string(), &(n + 1)).unwrap();
        }
        distinct.put(b, other, &W1, &"z".into(), &1).unwrap();
        let mut seen = Vec::new();
        distinct
            .for_each(b, key, &W1, &mut |k, v| {
                seen.push((k, v));
                true
            })
            .unwrap();
        assert_eq!(seen, vec![("a".into(), 1), ("b".into(), 2), ("c".into(), 1)], "{name}: counts, in key order");
        distinct.remove(b, key, &W1, &"b".into()).unwrap();
        distinct.clear(b, key, &W1).unwrap();
        let mut n = 0;
        distinct
            .for_each(b, key, &W1, &mut |_, _| {
                n += 1;
                true
            })
            .unwrap();
        assert_eq!(n, 0, "{name}");
        assert_eq!(distinct.get(b, other, &W1, &"z".into()).unwrap(), Some(1), "{name}");

        for i in 0..300 {
            rows.add(b, key, &(), &format!("row {i}")).unwrap();
        }
        let mut got = Vec::new();
        rows.for_each(b, key, &(), &mut |v| {
            got.push(v);
            got.len() < 257
        })
        .unwrap();
        assert_eq!(got.len(), 257, "{name}: stops when asked");
        assert_eq!(got[256], "row 256", "{name}: insertion order past 255 elements");
        rows.clear(b, key, &()).unwrap();
        rows.add(b, key, &(), &"again".into()).unwrap();
        let mut got = Vec::new();
        rows.for_each(b, key, &(), &mut |v| {
            got.push(v);
            true
        })
        .unwrap();
        assert_eq!(got, vec!["again".to_string()], "{name}");
    }
}

#[test]
fn timers_fire_in_time_order_once() {
    for (name, make) in BACKENDS {
        let (mut b, _dir) = make();
        let b = b.as_mut();
        let mut timers = Timers::<WindowNs>::new(3);
        timers.register(b, k(5, b"a"), 19, &W2).unwrap();
        timers.register(b, k(5, b"a"), 9, &W1).unwrap();
        timers.register(b, k(5, b"a"), 9, &W1).unwrap();
        timers.register(b, k(2, b"b"), 9, &W1).unwrap();
        timers.register(b, k(7, b"c"), -3, &W1).unwrap();
        timers.register(b, k(9, b"out of range"), 0, &W1).unwrap();
        timers.delete(b, k(7, b"c"), -3, &W1).unwrap();
        timers.register(b, k(7, b"c"), -4, &W1).unwrap();

        let due = timers.take_due(b, 0..8, 9, usize::MAX).unwrap();
        let got: Vec<(i64, u16, &[u8])> = due.iter().map(|d| (d.time, d.key_group, d.key.as_slice())).collect();
        assert_eq!(got, vec![(-4, 7, &b"c"[..]), (9, 2, &b"b"[..]), (9, 5, &b"a"[..])], "{name}");
        assert_eq!(due[2].namespace, W1, "{name}");
        assert!(timers.take_due(b, 0..8, 9, usize::MAX).unwrap().is_empty(), "{name}: fired timers are gone");
        let later = timers.take_due(b, 0..8, i64::MAX, usize::MAX).unwrap();
        assert_eq!(later.len(), 1, "{name}");
        assert_eq!((later[0].time, later[0].namespace), (19, W2), "{name}");
        assert_eq!(timers.take_due(b, 9..10, i64::MAX, usize::MAX).unwrap().len(), 1, "{name}");

        // After the first scan only key groups that can have a due timer are scanned: a timer
        // registered since then is still found, and so is one a fresh handle (a restore) sees.
        timers.register(b, k(6, b"d"), 30, &W2).unwrap();
        timers.register(b, k(1, b"e"), 40, &W2).unwrap();
        assert!(timers.take_due(b, 0..8, 29, usize::MAX).unwrap().is_empty(), "{name}");
        let got: Vec<i64> = timers.take_due(b, 0..8, 35, usize::MAX).unwrap().iter().map(|d| d.time).collect();
        assert_eq!(got, vec![30], "{name}");
        let mut restored = Timers::<WindowNs>::new(3);
        let got: Vec<i64> = restored.take_due(b, 0..8, 50, usize::MAX).unwrap().iter().map(|d| d.time).collect();
        assert_eq!(got, vec![40], "{name}");
        assert!(timers.take_due(b, 0..8, 50, usize::MAX).unwrap().is_empty(), "{name}: the other handle fired it");
    }
}

#[test]
fn timers_fire_in_bounded_steps() {
    for (name, make) in BACKENDS {
        let (mut b, _dir) = make();
        let b = b.as_mut();
        let mut timers = Timers::<WindowNs>::new(3);
        for i in 0..10i64 {
            timers.register(b, k((i % 3) as u16, format!("k{i}").as_bytes()), i % 4, &W1).unwrap();
        }
        timers.register(b, k(1, b"later"), 100, &W1).unwrap();
        let mut all = Vec::new();
        loop {
            let step = timers.take_due(b, 0..3, 50, 3).unwrap();
            assert!(step.len() <= 3, "{name}");
            if step.is_empty() {
                break;
            }
            all.extend(step.into_iter().map(|d| (d.key_group, d.time, d.key)));
        }
        assert_eq!(all.len(), 10, "{name}: every due timer once: {all:?}");
        let mut unique = all.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 10, "{name}");
        for w in all.windows(2).filter(|w| w[0].0 == w[1].0) {
            assert!(w[0].1 <= w[1].1, "{name}: by time within a key group: {all:?}");
        }
        assert_eq!(timers.take_due(b, 0..3, 100, 3).unwrap().len(), 1, "{name}");
    }
}

fn fill(b: &mut dyn StateBackend) {
    let acc = ValueState::<WindowNs, i64>::new(0);
    let distinct = MapState::<WindowNs, String, u64>::new(1);
    let rows = ListState::<(), String>::new(2);
    let mut timers = Timers::<WindowNs>::new(3);
    for kg in 0..16u16 {
        for i in 0..20i64 {
            let key = format!("key-{kg}-{i}");
            let kc = k(kg, key.as_bytes());
            acc.put(b, kc, &W1, &(i * i)).unwrap();
            rows.add(b, kc, &(), &key).unwrap();
            distinct.put(b, kc, &W2, &format!("v{}", i % 3), &(i as u64)).unwrap();
            timers.register(b, kc, i, &W1).unwrap();
        }
    }
}

fn dump(b: &dyn StateBackend) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    (0..b.descriptors().len()).map(|t| b.range(t, &[], None).unwrap().map(Result::unwrap).collect()).collect()
}

#[test]
fn snapshots_restore_into_the_other_backend_kind() {
    for (from_name, from) in BACKENDS {
        for (to_name, to) in BACKENDS {
            let (mut a, _d1) = from();
            fill(a.as_mut());
            let whole = a.snapshot(0..16).unwrap();
            let (mut b, _d2) = to();
            b.restore(&whole, 0..16).unwrap();
            assert_eq!(dump(a.as_ref()), dump(b.as_ref()), "{from_name} → {to_name}");

            // A rescale: the new subtask owning key groups 4..10 takes them from two snapshots.
            let low = a.snapshot(0..8).unwrap();
            let high = a.snapshot(8..16).unwrap();
            assert_eq!(read_snapshot(&low).unwrap().key_groups, 0..8);
            let (mut c, _d3) = to();
            c.restore(&low, 4..10).unwrap();
            c.restore(&high, 4..10).unwrap();
            for (t, entries) in dump(c.as_ref()).into_iter().enumerate() {
                let expect: Vec<_> = dump(a.as_ref())[t]
                    .iter()
                    .filter(|(k, _)| (4..10).contains(&u16::from_be_bytes([k[0], k[1]])))
                    .cloned()
                    .collect();
                assert!(!expect.is_empty());
                assert_eq!(entries, expect, "{from_name} → {to_name}, table {t}");
            }
        }
    }
}

#[test]
fn corrupt_or_foreign_snapshots_are_refused() {
    let (mut a, _d) = memory();
    fill(a.as_mut());
    let snap = a.snapshot(0..16).unwrap();
    for (name, make) in BACKENDS {
        let (mut b, _d) = make();
        let e = b.restore(&snap[..snap.len() - 1], 0..16).unwrap_err();
        assert!(e.0.contains("corrupt or truncated"), "{name}: {e}");
        let mut flipped = snap.clone();
        flipped[snap.len() / 2] ^= 0x40;
        assert!(b.restore(&flipped, 0..16).unwrap_err().0.contains("checksum"), "{name}");
        assert!(b.restore(b"not a snapshot at all", 0..16).is_err(), "{name}");
        assert_eq!(dump(b.as_ref()).iter().map(Vec::len).sum::<usize>(), 0, "{name}: nothing half-restored");
    }
    let other = MemoryBackend::new(vec![ValueState::<(), i64>::descriptor("something else")]);
    let mut other_kind = MemoryBackend::new(vec![ValueState::<(), i64>::descriptor("acc")]);
    let snap = other.snapshot(0..16).unwrap();
    other_kind.restore(&snap, 0..16).unwrap_err();
}
