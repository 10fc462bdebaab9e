//! Keyed state: what stateful operators remember between rows, per key.
//!
//! State is partitioned like the data: a key hashes to one of `max_parallelism` key groups
//! ([`key_hash`], a versioned contract), and each subtask owns a contiguous range of key groups
//! ([`subtask_for_key_group`]). Rescaling moves whole key-group ranges, so a key's state never
//! has to be re-hashed.
//!
//! [`backend`] is the byte-level backend trait and the key layout (`[key group][key][namespace]`),
//! with snapshots per key-group range; [`memory`] and [`rocks`] implement it; [`typed`] puts
//! value, map and list state and timers on top, with the order-preserving codecs of [`codec`].
//! The typed maps below this line are the window operator's current in-memory state, which
//! moves onto the backend trait next.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

/// Row-encoded key columns of one key.
pub type Key = Vec<u8>;

pub mod backend;
pub mod codec;
pub mod key_hash;
pub mod memory;
pub mod rocks;
#[cfg(test)]
mod suite;
pub mod typed;

pub use key_hash::key_group_of;

/// The subtask owning a key group: subtask i owns the contiguous range
/// `[ceil(i * max / p), ceil((i + 1) * max / p))`.
pub fn subtask_for_key_group(key_group: u32, max_parallelism: u32, parallelism: u32) -> u32 {
    ((u64::from(key_group) * u64::from(parallelism)) / u64::from(max_parallelism.max(1))) as u32
}

/// Per-key values in a namespace.
#[derive(Debug)]
pub struct ValueState<N, V> {
    values: HashMap<(Key, N), V>,
}

impl<N: Hash + Eq + Clone, V: Clone> Default for ValueState<N, V> {
    fn default() -> Self {
        ValueState { values: HashMap::new() }
    }
}

impl<N: Hash + Eq + Clone, V: Clone> ValueState<N, V> {
    /// The value of `key` in `ns`.
    pub fn get(&self, key: &[u8], ns: &N) -> Option<V> {
        self.values.get(&(key.to_vec(), ns.clone())).cloned()
    }

    /// Sets the value of `key` in `ns`.
    pub fn put(&mut self, key: &[u8], ns: N, value: V) {
        self.values.insert((key.to_vec(), ns), value);
    }

    /// Removes the value of `key` in `ns`, returning it.
    pub fn remove(&mut self, key: &[u8], ns: &N) -> Option<V> {
        self.values.remove(&(key.to_vec(), ns.clone()))
    }

    /// Number of (key, namespace) entries.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// Per-key maps in a namespace.
#[derive(Debug)]
pub struct MapState<N, K, V> {
    maps: HashMap<(Key, N), HashMap<K, V>>,
}

impl<N: Hash + Eq + Clone, K: Hash + Eq + Clone, V: Clone> Default for MapState<N, K, V> {
    fn default() -> Self {
        MapState { maps: HashMap::new() }
    }
}

impl<N: Hash + Eq + Clone, K: Hash + Eq + Clone, V: Clone> MapState<N, K, V> {
    /// One entry of the map of `key` in `ns`.
    pub fn get(&self, key: &[u8], ns: &N, map_key: &K) -> Option<V> {
        self.maps.get(&(key.to_vec(), ns.clone())).and_then(|m| m.get(map_key)).cloned()
    }

    /// Sets one entry.
    pub fn put(&mut self, key: &[u8], ns: N, map_key: K, value: V) {
        self.maps.entry((key.to_vec(), ns)).or_default().insert(map_key, value);
    }

    /// All entries of the map of `key` in `ns`.
    pub fn entries(&self, key: &[u8], ns: &N) -> Vec<(K, V)> {
        self.maps
            .get(&(key.to_vec(), ns.clone()))
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Removes the whole map of `key` in `ns`.
    pub fn clear(&mut self, key: &[u8], ns: &N) {
        self.maps.remove(&(key.to_vec(), ns.clone()));
    }
}

/// Per-key lists in a namespace.
#[derive(Debug)]
pub struct ListState<N, V> {
    lists: HashMap<(Key, N), Vec<V>>,
}

impl<N: Hash + Eq + Clone, V: Clone> Default for ListState<N, V> {
    fn default() -> Self {
        ListState { lists: HashMap::new() }
    }
}

impl<N: Hash + Eq + Clone, V: Clone> ListState<N, V> {
    /// Appends to the list of `key` in `ns`.
    pub fn add(&mut self, key: &[u8], ns: N, value: V) {
        self.lists.entry((key.to_vec(), ns)).or_default().push(value);
    }

    /// The list of `key` in `ns`.
    pub fn get(&self, key: &[u8], ns: &N) -> Vec<V> {
        self.lists.get(&(key.to_vec(), ns.clone())).cloned().unwrap_or_default()
    }

    /// Replaces the list of `key` in `ns`.
    pub fn update(&mut self, key: &[u8], ns: N, values: Vec<V>) {
        if values.is_empty() {
            self.lists.remove(&(key.to_vec(), ns));
        } else {
            self.lists.insert((key.to_vec(), ns), values);
        }
    }

    /// Removes the list of `key` in `ns`.
    pub fn clear(&mut self, key: &[u8], ns: &N) {
        self.lists.remove(&(key.to_vec(), ns.clone()));
    }
}

/// Event-time timers: (time, key, namespace), fired in time order once the watermark
/// reaches them. Registering the same timer twice keeps one.
#[derive(Debug)]
pub struct Timers<N: Ord> {
    timers: BTreeSet<(i64, Key, N)>,
}

impl<N: Ord + Clone> Default for Timers<N> {
    fn default() -> Self {
        Timers { timers: BTreeSet::new() }
    }
}

impl<N: Ord + Clone> Timers<N> {
    /// Registers a timer at event time `at`.
    pub fn register(&mut self, at: i64, key: &[u8], ns: N) {
        self.timers.insert((at, key.to_vec(), ns));
    }

    /// Deletes a timer.
    pub fn delete(&mut self, at: i64, key: &[u8], ns: N) {
        self.timers.remove(&(at, key.to_vec(), ns));
    }

    /// Removes and returns every timer at or before `watermark`, in time order.
    pub fn due(&mut self, watermark: i64) -> Vec<(i64, Key, N)> {
        let mut out = Vec::new();
        while let Some(first) = self.timers.first() {
            if first.0 > watermark {
                break;
            }
            out.push(self.timers.pop_first().expect("non-empty"));
        }
        out
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.timers.len()
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.timers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_groups_map_to_contiguous_ranges() {
        let max = 128;
        for p in [1, 2, 3, 4, 7] {
            let owners: Vec<u32> = (0..max).map(|kg| subtask_for_key_group(kg, max, p)).collect();
            assert!(owners.windows(2).all(|w| w[0] <= w[1]), "contiguous for p={p}");
            assert_eq!(owners[0], 0);
            assert_eq!(*owners.last().unwrap(), p - 1);
        }
        assert_eq!(key_group_of(300, 128), 44);
    }

    #[test]
    fn state_kinds() {
        let mut v: ValueState<i64, u32> = ValueState::default();
        v.put(b"k", 1, 5);
        assert_eq!(v.get(b"k", &1), Some(5));
        assert_eq!(v.get(b"k", &2), None);
        assert_eq!(v.remove(b"k", &1), Some(5));
        assert!(v.is_empty());

        let mut m: MapState<(), String, u32> = MapState::default();
        m.put(b"k", (), "a".into(), 1);
        m.put(b"k", (), "b".into(), 2);
        assert_eq!(m.get(b"k", &(), &"b".to_string()), Some(2));
        assert_eq!(m.entries(b"k", &()).len(), 2);
        m.clear(b"k", &());
        assert!(m.entries(b"k", &()).is_empty());

        let mut l: ListState<(), i32> = ListState::default();
        l.add(b"k", (), 1);
        l.add(b"k", (), 2);
        assert_eq!(l.get(b"k", &()), vec![1, 2]);
        l.update(b"k", (), vec![]);
        assert!(l.get(b"k", &()).is_empty());

        let mut t: Timers<i64> = Timers::default();
        t.register(10, b"a", 0);
        t.register(5, b"b", 0);
        t.register(10, b"a", 0);
        t.register(20, b"c", 0);
        assert_eq!(t.len(), 3);
        let due = t.due(10);
        assert_eq!(due.iter().map(|d| d.0).collect::<Vec<_>>(), vec![5, 10]);
        assert_eq!(t.len(), 1);
    }
}
