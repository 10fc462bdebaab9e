//! The byte-level state backend: ordered tables of byte keys and values, one table per
//! declared state of an operator, and the key layout every table shares.
//!
//! Every key starts with its key group (2 bytes, big-endian), so a snapshot, a restore or a
//! rescale takes whole key-group ranges by range scans, without re-hashing a key:
//!
//! - value, map and list state: `[key group][key length: u32][key][namespace length: u16][namespace]`,
//!   then for a map the user key, for a list the element's sequence number;
//! - timers: `[key group][time, order-preserving: 8 bytes][key length: u32][key][namespace]`, so the
//!   timers due at a watermark are a prefix of each key group's range.
//!
//! A snapshot is a self-checking byte string (magic, format version, key-hash version, key-group
//! range, tables by name, entries, an XXH64 checksum); restoring takes the entries of the
//! restoring subtask's key-group range and refuses a snapshot that is truncated or corrupt.

use std::ops::Range;
use std::path::PathBuf;

use twox_hash::XxHash64;

use super::key_hash::KEY_HASH_VERSION;

/// A state failure: the backend's storage failed, or a snapshot or stored value is unreadable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StateError(pub String);

impl StateError {
    /// A failure with this message.
    pub fn new(message: impl Into<String>) -> Self {
        StateError(message.into())
    }
}

/// State results.
pub type StateResult<T> = Result<T, StateError>;

/// What a declared state holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    /// One value per key and namespace.
    Value,
    /// A map per key and namespace.
    Map,
    /// An append-only list per key and namespace.
    List,
    /// Event-time timers ordered by time.
    Timers,
}

/// A state an operator declares up front: its name is its identity in checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateDescriptor {
    /// Unique within the operator.
    pub name: String,
    /// Value, map, list or timers.
    pub kind: StateKind,
    /// How keys and values are encoded, for humans and for compatibility checks.
    pub codec: String,
}

impl StateDescriptor {
    /// A descriptor.
    pub fn new(name: &str, kind: StateKind, codec: &str) -> Self {
        StateDescriptor { name: name.into(), kind, codec: codec.into() }
    }
}

/// The index of a declared state among an operator's states.
pub type TableId = usize;

/// One stored entry.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Entries in key order.
pub type Entries<'a> = Box<dyn Iterator<Item = StateResult<Entry>> + 'a>;

/// A consistent copy of a backend's whole state as its own files, for an incremental
/// checkpoint: the files in `dir`, a scratch folder removed when this is dropped.
#[derive(Debug)]
pub struct NativeSnapshot {
    /// The folder holding the files.
    pub dir: PathBuf,
    /// The files, by name.
    pub files: Vec<NativeFile>,
}

/// One file of a [`NativeSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeFile {
    /// Its name in the snapshot's folder (and in the backend's).
    pub name: String,
    /// For an immutable file, an identity no other file shares: a checkpoint may refer to a
    /// stored copy of the same key instead of uploading it again. `None` for files that change.
    pub key: Option<String>,
}

impl Drop for NativeSnapshot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        // The job's state folder goes too once nothing else is in it (the job may have ended
        // while this snapshot was uploading).
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// Ordered byte tables, one per declared state. One instance per stateful subtask.
pub trait StateBackend: Send {
    /// The states this backend was opened with, in table order.
    fn descriptors(&self) -> &[StateDescriptor];

    /// The value under `key`.
    fn get(&self, table: TableId, key: &[u8]) -> StateResult<Option<Vec<u8>>>;

    /// Sets the value under `key`.
    fn put(&mut self, table: TableId, key: &[u8], value: &[u8]) -> StateResult<()>;

    /// Removes `key` (absent is fine).
    fn delete(&mut self, table: TableId, key: &[u8]) -> StateResult<()>;

    /// Entries with `start <= key` and, when `end` is given, `key < end`, in key order.
    fn range<'a>(&'a self, table: TableId, start: &[u8], end: Option<&[u8]>) -> StateResult<Entries<'a>>;

    /// Entries whose key starts with `prefix`, in key order.
    fn prefix<'a>(&'a self, table: TableId, prefix: &[u8]) -> StateResult<Entries<'a>> {
        match prefix_end(prefix) {
            Some(end) => self.range(table, prefix, Some(&end)),
            None => self.range(table, prefix, None),
        }
    }

    /// A snapshot of every table's entries in the key groups `key_groups`.
    fn snapshot(&self, key_groups: Range<u16>) -> StateResult<Vec<u8>> {
        let mut w = SnapshotWriter::new(key_groups.clone(), self.descriptors().len());
        let start = key_groups.start.to_be_bytes();
        let end = key_groups.end.to_be_bytes();
        let end = Some(&end[..]);
        for (t, d) in self.descriptors().iter().enumerate() {
            let entries: Vec<Entry> = self.range(t, &start, end)?.collect::<StateResult<_>>()?;
            w.table(&d.name, &entries);
        }
        Ok(w.finish())
    }

    /// A copy of the whole state as the backend's own files (RocksDB: a native checkpoint of
    /// hard-linked SST files), for an incremental checkpoint `checkpoint`; `None` for a backend
    /// without files, whose checkpoints use [`StateBackend::snapshot`].
    fn native_snapshot(&mut self, _checkpoint: u64) -> StateResult<Option<NativeSnapshot>> {
        Ok(None)
    }

    /// Adds the entries of `snapshot` that fall in `key_groups` (the restoring subtask's range;
    /// a rescaled job restores each subtask from every snapshot that overlaps its range).
    /// Tables the snapshot has and this backend does not declare are an error.
    fn restore(&mut self, snapshot: &[u8], key_groups: Range<u16>) -> StateResult<()> {
        let snap = read_snapshot(snapshot)?;
        let mut tables = Vec::with_capacity(snap.tables.len());
        for (name, entries) in snap.tables {
            let Some(t) = self.descriptors().iter().position(|d| d.name == name) else {
                return Err(StateError::new(format!(
                    "the snapshot has state `{name}` that this operator does not declare"
                )));
            };
            tables.push((t, entries));
        }
        for (t, entries) in tables {
            for (k, v) in entries {
                if key_groups.contains(&key_group_of_key(&k)?) {
                    self.put(t, &k, &v)?;
                }
            }
        }
        Ok(())
    }
}

/// The smallest key greater than every key starting with `prefix` (none if all bytes are 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The key group a stored key belongs to.
pub fn key_group_of_key(key: &[u8]) -> StateResult<u16> {
    match key {
        [a, b, ..] => Ok(u16::from_be_bytes([*a, *b])),
        _ => Err(StateError::new("a stored key is shorter than its key group")),
    }
}

/// `[key group][key length][key][namespace length][namespace]`: the prefix of everything one
/// key keeps in one namespace.
///
/// Keys up to 4 GiB and namespaces up to 64 KiB are representable; operators build namespaces
/// of fixed small size and keys from row-encoded columns bounded by the batch byte budget.
pub fn keyed_prefix(key_group: u16, key: &[u8], namespace: &[u8]) -> Vec<u8> {
    assert!(namespace.len() <= usize::from(u16::MAX), "a state namespace is limited to 64 KiB");
    let mut k = Vec::with_capacity(8 + key.len() + namespace.len());
    k.extend_from_slice(&key_group.to_be_bytes());
    k.extend_from_slice(&u32::try_from(key.len()).expect("a state key is limited to 4 GiB").to_be_bytes());
    k.extend_from_slice(key);
    k.extend_from_slice(&(namespace.len() as u16).to_be_bytes());
    k.extend_from_slice(namespace);
    k
}

/// `[key group][time][key length][key][namespace]`: a timer's key.
pub fn timer_key(key_group: u16, time: i64, key: &[u8], namespace: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(14 + key.len() + namespace.len());
    k.extend_from_slice(&key_group.to_be_bytes());
    k.extend_from_slice(&super::codec::ordered_i64(time));
    k.extend_from_slice(&u32::try_from(key.len()).expect("a state key is limited to 4 GiB").to_be_bytes());
    k.extend_from_slice(key);
    k.extend_from_slice(namespace);
    k
}

/// The parts of a timer key: key group, time, key, namespace.
pub fn split_timer_key(k: &[u8]) -> StateResult<(u16, i64, &[u8], &[u8])> {
    let bad = || StateError::new("a stored timer key is malformed");
    if k.len() < 14 {
        return Err(bad());
    }
    let kg = u16::from_be_bytes([k[0], k[1]]);
    let time = super::codec::from_ordered_i64(&k[2..10]).ok_or_else(bad)?;
    let len = u32::from_be_bytes([k[10], k[11], k[12], k[13]]) as usize;
    let key = k.get(14..14 + len).ok_or_else(bad)?;
    Ok((kg, time, key, &k[14 + len..]))
}

const MAGIC: &[u8; 8] = b"SLUICEST";
const FORMAT_VERSION: u32 = 1;

struct SnapshotWriter {
    out: Vec<u8>,
}

impl SnapshotWriter {
    fn new(key_groups: Range<u16>, tables: usize) -> Self {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&KEY_HASH_VERSION.to_be_bytes());
        out.extend_from_slice(&key_groups.start.to_be_bytes());
        out.extend_from_slice(&key_groups.end.to_be_bytes());
        out.extend_from_slice(&(tables as u32).to_be_bytes());
        SnapshotWriter { out }
    }

    fn table(&mut self, name: &str, entries: &[Entry]) {
        self.out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(&(entries.len() as u64).to_be_bytes());
        for (k, v) in entries {
            self.out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            self.out.extend_from_slice(k);
            self.out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            self.out.extend_from_slice(v);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        let sum = XxHash64::oneshot(0, &self.out);
        self.out.extend_from_slice(&sum.to_be_bytes());
        self.out
    }
}

/// A decoded snapshot.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The key groups it covers.
    pub key_groups: Range<u16>,
    /// Entries per state name, in key order.
    pub tables: Vec<(String, Vec<Entry>)>,
}

/// Decodes and checks a snapshot.
pub fn read_snapshot(bytes: &[u8]) -> StateResult<Snapshot> {
    let corrupt = |what: &str| StateError::new(format!("the state snapshot is corrupt or truncated ({what})"));
    if bytes.len() < MAGIC.len() + 8 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not a Sluice state snapshot"));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    if XxHash64::oneshot(0, body).to_be_bytes() != sum {
        return Err(corrupt("checksum mismatch"));
    }
    let mut r = Reader { b: &body[MAGIC.len()..] };
    let format = r.u32().ok_or_else(|| corrupt("header"))?;
    if format != FORMAT_VERSION {
        return Err(StateError::new(format!(
            "state snapshot format {format} is not supported (this build reads {FORMAT_VERSION})"
        )));
    }
    let hash = r.u32().ok_or_else(|| corrupt("header"))?;
    if hash != KEY_HASH_VERSION {
        return Err(StateError::new(format!(
            "the snapshot was partitioned with key hash version {hash}; this build uses {KEY_HASH_VERSION}"
        )));
    }
    let start = r.u16().ok_or_else(|| corrupt("header"))?;
    let end = r.u16().ok_or_else(|| corrupt("header"))?;
    let n = r.u32().ok_or_else(|| corrupt("header"))?;
    let mut tables = Vec::new();
    for _ in 0..n {
        let name = r.bytes32().and_then(|b| String::from_utf8(b.to_vec()).ok()).ok_or_else(|| corrupt("table name"))?;
        let count = r.u64().ok_or_else(|| corrupt("entry count"))?;
        let mut entries = Vec::new();
        for _ in 0..count {
            let k = r.bytes32().ok_or_else(|| corrupt("entry"))?.to_vec();
            let v = r.bytes32().ok_or_else(|| corrupt("entry"))?.to_vec();
            entries.push((k, v));
        }
        tables.push((name, entries));
    }
    if !r.b.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(Snapshot { key_groups: start..end, tables })
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }
    fn bytes32(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}
