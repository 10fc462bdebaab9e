//! Typed value, map and list state and event-time timers over a [`StateBackend`] table. Each
//! handle is a table id plus codecs; the backend is passed to every call, so one operator's
//! handles share one backend. Reads iterate or decode one entry; nothing clones a whole map or
//! list.

use std::marker::PhantomData;
use std::ops::Range;

use super::backend::{
    StateBackend, StateDescriptor, StateKind, StateResult, TableId, keyed_prefix, prefix_end, split_timer_key,
    timer_key,
};
use super::codec::Codec;

/// Which key the state is read or written for: its key group and its encoded key columns.
#[derive(Debug, Clone, Copy)]
pub struct KeyCtx<'a> {
    /// The key's key group.
    pub key_group: u16,
    /// The row-encoded key columns.
    pub key: &'a [u8],
}

/// The value types a handle encodes, without owning any.
type Types<T> = PhantomData<fn() -> T>;

/// One value per key and namespace.
#[derive(Debug, Clone, Copy)]
pub struct ValueState<N, V> {
    table: TableId,
    _types: Types<(N, V)>,
}

impl<N: Codec, V: Codec> ValueState<N, V> {
    /// The handle of table `table`.
    pub fn new(table: TableId) -> Self {
        ValueState { table, _types: PhantomData }
    }

    /// How this state is declared.
    pub fn descriptor(name: &str) -> StateDescriptor {
        StateDescriptor::new(name, StateKind::Value, &format!("namespace {}, value {}", N::NAME, V::NAME))
    }

    /// The value in `ns`.
    pub fn get(&self, b: &dyn StateBackend, k: KeyCtx<'_>, ns: &N) -> StateResult<Option<V>> {
        b.get(self.table, &keyed_prefix(k.key_group, k.key, &ns.to_bytes()))?.map(|v| V::decode(&v)).transpose()
    }

    /// Sets the value in `ns`.
    pub fn put(&self, b: &mut dyn StateBackend, k: KeyCtx<'_>, ns: &N, v: &V) -> StateResult<()> {
        b.put(self.table, &keyed_prefix(k.key_group, k.key, &ns.to_bytes()), &v.to_bytes())
    }

    /// Removes the value in `ns`.
    pub fn clear(&self, b: &mut dyn StateBackend, k: KeyCtx<'_>, ns: &N) -> StateResult<()> {
        b.delete(self.table, &keyed_prefix(k.key_group, k.key, &ns.to_bytes()))
    }
}

/// A map per key and namespace; entries iterate in the order of the map-key codec.
#[derive(Debug, Clone, Copy)]
pub struct MapState<N, K, V> {
    table: TableId,
    _types: Types<(N, K, V)>,
}

impl<N: Codec, K: Codec, V: Codec> MapState<N, K, V> {
    /// The handle of table `table`.
    pub fn new(table: TableId) -> Self {
        MapState { table, _types: PhantomData }
    }

    /// How this state is declared.
    pub fn descriptor(name: &str) -> StateDescriptor {
        StateDescriptor::new(
            name,
            StateKind::Map,
            &format!("namespace {}, key {}, value {}", N::NAME, K::NAME, V::NAME),
        )
    }

    fn entry_key(k: KeyCtx<'_>, ns: &N, mk: &K) -> Vec<u8> {
        let mut key = keyed_prefix(k.key_group, k.key, &ns.to_bytes());
        mk.encode(&mut key);
        key
    }

    /// The value under `mk`.
    pub fn get(&self, b: &dyn StateBackend, k: KeyCtx<'_>, ns: &N, mk: &K) -> StateResult<Option<V>> {
        b.get(self.table, &Self::entry_key(k, ns, mk))?.map(|v| V::decode(&v)).transpose()
    }

    /// Sets the value under `mk`.
    pub fn put(&self, b: &mut dyn StateBackend, k: KeyCtx<'_>, ns: &N, mk: &K, v: &V) -> StateResult<()> {
        b.put(self.table, &Self::entry_key(k, ns, mk), &v.to_bytes())
    }

    /// Removes `mk`.
    pub fn remove(&self, b: &mut dyn StateBackend, k: KeyCtx<'_>, ns: &N, mk: &K) -> StateResult<()> {
        b.delete(self.table, &Self::entry_key(k, ns, mk))
    }

    /// Visits every entry in map-key order; `f` returns `false` to stop.
    pub fn for_each(
        &self,
        b: &dyn StateBackend,
        k: KeyCtx<'_>,
        ns: &N,
        f: &mut dyn FnMut(K, V) -> bool,
    ) -> StateResult<()> {
        let prefix = keyed_prefix(k.key_group, k.key, &ns.to_bytes());
        for e in b.prefix(self.table, &prefix)? {
            let (key, value) = e?;
            if !f(K::decode(&key[prefix.len()..])?, V::decode(&value)?) {
                break;
            }
        }
        Ok(())
    }

    /// Removes every entry of `ns`.
    pub fn clear(&self, b: &mut dyn StateBackend, k: KeyCtx<'_>, ns: &N) -> StateResult<()> {
        clear_prefix(b, self.table, &keyed_prefix(k.key_group, k.key, &ns.to_bytes()))
    }
}

/// An append-only list per key and namespace, in insertion order.
#[derive(Debug, Clone, Copy)]
pub struct ListState<N, V> {
    table: TableId,
    _types: Types<(N, V)>,
}

impl<N: Codec, V: Codec> ListState<N, V> {
    /// The handle of table `table`.
    pub fn new(table: TableId) -> Self {
        ListState { table, _types: PhantomData }
    }

    /// How this state is declared.
    pub fn descriptor(name: &str) -> StateDescriptor {
        StateDescriptor::new(name, StateKind::List, &format!("namespace {}, element {}", N::NAME, V::NAME))
    }

    /// Appends `v`. The list's length is kept under the bare prefix; elements follow it,
    /// numbered, so an append writes two small entries whatever the list's length.
    pub fn add(&self, b: &mut dyn StateBackend, k: KeyCtx<'_>, ns: &N, v: &V) -> StateResult<()> {
        let prefix = keyed_prefix(k.key_group, k.key, &ns.to_bytes());
        let n = b.get(self.table, &prefix)?.map(|l| u64::decode(&l)).transpose()?.unwrap_or(0);
        let mut key = prefix.clone();
        n.encode(&mut key);
        b.put(self.table, &key, &v.to_bytes())?;
        b.put(self.table, &prefix, &(n + 1).to_bytes())
    }

    /// Visits the elements in insertion order; `f` returns `false` to stop.
    pub fn for_each(
        &self,
        b: &dyn StateBackend,
        k: KeyCtx<'_>,
        ns: &N,
        f: &mut dyn FnMut(V) -> bool,
    ) -> StateResult<()> {
        let prefix = keyed_prefix(k.key_group, k.key, &ns.to_bytes());
        for e in b.prefix(self.table, &prefix)? {
            let (key, value) = e?;
            if key.len() == prefix.len() {
                continue;
            }
            if !f(V::decode(&value)?) {
                break;
            }
        }
        Ok(())
    }

    /// Removes the list.
    pub fn clear(&self, b: &mut dyn StateBackend, k: KeyCtx<'_>, ns: &N) -> StateResult<()> {
        clear_prefix(b, self.table, &keyed_prefix(k.key_group, k.key, &ns.to_bytes()))
    }
}

fn clear_prefix(b: &mut dyn StateBackend, table: TableId, prefix: &[u8]) -> StateResult<()> {
    let keys: Vec<Vec<u8>> = b.prefix(table, prefix)?.map(|e| e.map(|(k, _)| k)).collect::<StateResult<_>>()?;
    for k in keys {
        b.delete(table, &k)?;
    }
    Ok(())
}

/// A timer that is due: when, for which key, in which namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer<N> {
    /// The time it was registered for.
    pub time: i64,
    /// The key's key group.
    pub key_group: u16,
    /// The encoded key.
    pub key: Vec<u8>,
    /// The namespace.
    pub namespace: N,
}

/// Event-time timers in their own table, ordered by `[key group][time]`.
///
/// The handle remembers, per key group, a time no timer of that group is earlier than, so a
/// watermark only scans the key groups that can have a due timer; until the first
/// [`Timers::take_due`] (a fresh or restored backend) every key group is scanned once.
#[derive(Debug, Clone)]
pub struct Timers<N> {
    table: TableId,
    /// Per key group with timers: no timer of it is earlier than this.
    earliest: std::collections::HashMap<u16, i64>,
    /// Whether `earliest` covers every timer in the table yet.
    known: bool,
    _types: Types<N>,
}

impl<N: Codec> Timers<N> {
    /// The handle of table `table`.
    pub fn new(table: TableId) -> Self {
        Timers { table, earliest: Default::default(), known: false, _types: PhantomData }
    }

    /// How this state is declared.
    pub fn descriptor(name: &str) -> StateDescriptor {
        StateDescriptor::new(name, StateKind::Timers, &format!("time i64 (ordered), namespace {}", N::NAME))
    }

    /// Registers a timer (registering one twice keeps one).
    pub fn register(&mut self, b: &mut dyn StateBackend, k: KeyCtx<'_>, time: i64, ns: &N) -> StateResult<()> {
        let earliest = self.earliest.entry(k.key_group).or_insert(time);
        *earliest = (*earliest).min(time);
        b.put(self.table, &timer_key(k.key_group, time, k.key, &ns.to_bytes()), &[])
    }

    /// Deletes a timer.
    pub fn delete(&self, b: &mut dyn StateBackend, k: KeyCtx<'_>, time: i64, ns: &N) -> StateResult<()> {
        b.delete(self.table, &timer_key(k.key_group, time, k.key, &ns.to_bytes()))
    }

    /// Removes and returns up to `limit` timers at or before `watermark` in `key_groups`, by
    /// time within a key group (call again until it returns none: a watermark that makes
    /// millions of timers due is worked off in bounded steps).
    pub fn take_due(
        &mut self,
        b: &mut dyn StateBackend,
        key_groups: Range<u16>,
        watermark: i64,
        limit: usize,
    ) -> StateResult<Vec<DueTimer<N>>> {
        if !self.known {
            // A fresh or restored backend: find each key group's earliest timer once.
            for kg in key_groups.clone() {
                let start = kg.to_be_bytes();
                let end = prefix_end(&start).expect("a key group below 0xffff");
                if let Some(first) = b.range(self.table, &start, Some(&end))?.next() {
                    let (_, time, _, _) = split_timer_key(&first?.0)?;
                    let earliest = self.earliest.entry(kg).or_insert(time);
                    *earliest = (*earliest).min(time);
                }
            }
            self.known = true;
        }
        let mut scan: Vec<(u16, i64)> = self
            .earliest
            .iter()
            .filter(|(kg, t)| key_groups.contains(kg) && **t <= watermark)
            .map(|(k, t)| (*k, *t))
            .collect();
        scan.sort_unstable();
        let mut keys = Vec::new();
        let mut due = Vec::new();
        for (kg, from) in scan {
            // From the earliest timer on (not the start of the key group: fired timers are
            // deleted, and RocksDB would walk their tombstones), up to `watermark`.
            let mut start = timer_key(kg, from, &[], &[]);
            start.truncate(10);
            let mut end = timer_key(kg, watermark, &[], &[]);
            end.truncate(10);
            let end = prefix_end(&end).expect("a key group below 0xffff");
            let mut cut_at = None;
            for e in b.range(self.table, &start, Some(&end))? {
                let (key, _) = e?;
                let (key_group, time, k, ns) = split_timer_key(&key)?;
                if due.len() == limit {
                    cut_at = Some(time);
                    break;
                }
                due.push(DueTimer { time, key_group, key: k.to_vec(), namespace: N::decode(ns)? });
                keys.push(key);
            }
            if let Some(time) = cut_at {
                self.earliest.insert(kg, time);
                break;
            }
            // The next timer of this key group, if any, bounds it from now on.
            let group_end = prefix_end(&kg.to_be_bytes()).expect("a key group below 0xffff");
            match b.range(self.table, &end, Some(&group_end))?.next() {
                Some(next) => {
                    let (_, time, _, _) = split_timer_key(&next?.0)?;
                    self.earliest.insert(kg, time);
                }
                None => {
                    self.earliest.remove(&kg);
                }
            }
        }
        for k in keys {
            b.delete(self.table, &k)?;
        }
        due.sort_by(|a, b| (a.time, a.key_group, &a.key).cmp(&(b.time, b.key_group, &b.key)));
        Ok(due)
    }
}
