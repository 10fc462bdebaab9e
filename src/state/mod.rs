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
//! A job opens one backend per stateful subtask through [`StateEnv`], from the spec's `state:`
//! settings: in memory, or RocksDB in a folder of its own that is removed when the job ends.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::spec::{StateBackend as StateBackendKind, StateConfig};
use backend::{Entries, NativeSnapshot, StateBackend, StateDescriptor, StateError, StateResult, TableId};
use memory::MemoryBackend;
use rocks::RocksDbBackend;

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

/// The key groups subtask `subtask` of `parallelism` owns: the `kg` with
/// `subtask_for_key_group(kg) == subtask`, which is `[ceil(i * max / p), ceil((i + 1) * max / p))`.
pub fn key_group_range(subtask: u32, max_parallelism: u32, parallelism: u32) -> Range<u16> {
    let max = u64::from(max_parallelism.max(1));
    let p = u64::from(parallelism.max(1));
    let bound = |i: u64| (i * max).div_ceil(p).min(max) as u16;
    bound(u64::from(subtask))..bound(u64::from(subtask) + 1)
}

/// Where one job's keyed state goes: the spec's `state:` settings, and for RocksDB the job's
/// folder `{path or system temp}/sluice-{job}-{pid}-{random}`, created on first use and
/// removed when the last backend opened from it and this value are gone.
#[derive(Debug)]
pub struct StateEnv {
    backend: StateBackendKind,
    root: PathBuf,
    /// Bytes of memory each stateful subtask may use: RocksDB's caches, windows' in-memory tier.
    per_subtask_memory: usize,
    /// Held while the job's folder exists.
    lock: std::sync::Mutex<Option<crate::checkpoint::FolderLock>>,
}

/// Default RocksDB memory budget of a whole job, divided among its stateful subtasks.
pub const DEFAULT_STATE_MEMORY: u64 = 256 << 20;

impl StateEnv {
    /// The state settings of job `job`, whose keyed operators run `stateful_subtasks` subtasks in all.
    pub fn new(job: &str, config: Option<&StateConfig>, stateful_subtasks: usize) -> Arc<Self> {
        let backend = config.map(|c| c.backend).unwrap_or_default();
        let base = Self::base(config);
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let job: String =
            job.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        // Folders of runs of this job that were killed hold nothing anyone can use.
        if backend == StateBackendKind::Rocksdb {
            crate::checkpoint::remove_abandoned(&base, &format!("sluice-{job}-"));
        }
        let root = base.join(format!("sluice-{job}-{}-{random:016x}", std::process::id()));
        let memory = config.and_then(|c| c.memory).map_or(DEFAULT_STATE_MEMORY, |m| m.0);
        let per_subtask_memory = usize::try_from(memory / stateful_subtasks.max(1) as u64).unwrap_or(usize::MAX);
        Arc::new(StateEnv { backend, root, per_subtask_memory, lock: std::sync::Mutex::new(None) })
    }

    /// The folder the job folders of `config` go in: `state.path`, else the system temp folder.
    pub fn base(config: Option<&StateConfig>) -> PathBuf {
        config.and_then(|c| c.path.as_deref()).map_or_else(std::env::temp_dir, PathBuf::from)
    }

    /// Creates the job's folder (once) and locks it, so no other run takes it for abandoned.
    fn make_root(&self) -> StateResult<()> {
        let mut lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if lock.is_none() {
            let cannot = |e: std::io::Error| {
                StateError::new(format!("cannot create the state folder {}: {e}", self.root.display()))
            };
            std::fs::create_dir_all(&self.root).map_err(cannot)?;
            *lock = Some(crate::checkpoint::FolderLock::take(&self.root).map_err(cannot)?);
        }
        Ok(())
    }

    /// Bytes of state memory each stateful subtask may use.
    pub fn per_subtask_memory(&self) -> usize {
        self.per_subtask_memory
    }

    /// Memory state, for tests and tools that run operators outside a job.
    pub fn memory() -> Arc<Self> {
        StateEnv::new("local", None, 1)
    }

    /// The job's RocksDB folder (it exists only while a RocksDB backend is open).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Opens the backend of one stateful subtask with the states its operator declares.
    pub fn open(
        self: &Arc<Self>,
        operator: &str,
        subtask: usize,
        descriptors: Vec<StateDescriptor>,
    ) -> StateResult<Box<dyn StateBackend>> {
        match self.backend {
            StateBackendKind::Memory => Ok(Box::new(MemoryBackend::new(descriptors))),
            StateBackendKind::Rocksdb => {
                self.make_root()?;
                let dir = self.root.join(format!("{operator}-{subtask}"));
                let db = RocksDbBackend::open(&dir, descriptors, self.per_subtask_memory)
                    .map_err(|e| StateError::new(format!("cannot open the state of `{operator}`: {e}")))?;
                Ok(Box::new(JobRocks { db: Some(db), _env: self.clone() }))
            }
        }
    }
}

/// One old subtask's native snapshot files, fetched to local paths, for a restore.
#[derive(Debug, Clone)]
pub struct NativePart {
    /// The key groups the old subtask owned.
    pub key_groups: Range<u16>,
    /// Its files.
    pub files: Vec<StagedFile>,
}

/// A native snapshot file at a local path.
#[derive(Debug, Clone)]
pub struct StagedFile {
    /// Its name in the database folder.
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    /// Its key, for an immutable file (see [`backend::NativeFile::key`]).
    pub key: Option<String>,
}

impl StateEnv {
    /// Opens the backend of one stateful subtask owning `key_groups`, holding what `parts`
    /// (native snapshots of old subtasks) hold in those key groups. A RocksDB subtask that
    /// owns exactly one old subtask's key groups opens that database in place; any other
    /// subtask copies its key groups' entries out of each overlapping snapshot.
    pub fn open_restored(
        self: &Arc<Self>,
        operator: &str,
        subtask: usize,
        descriptors: Vec<StateDescriptor>,
        key_groups: Range<u16>,
        parts: &[NativePart],
    ) -> StateResult<Box<dyn StateBackend>> {
        let overlapping: Vec<&NativePart> = parts
            .iter()
            .filter(|p| p.key_groups.start < key_groups.end && key_groups.start < p.key_groups.end)
            .collect();
        if !overlapping.is_empty() {
            self.make_root()?;
        }
        if let ([part], StateBackendKind::Rocksdb) = (overlapping.as_slice(), self.backend)
            && part.key_groups == key_groups
        {
            let dir = self.root.join(format!("{operator}-{subtask}"));
            let origin = place_files(part, &dir)?;
            let db = RocksDbBackend::open_existing(&dir, descriptors, self.per_subtask_memory, origin)
                .map_err(|e| StateError::new(format!("cannot restore the state of `{operator}`: {e}")))?;
            return Ok(Box::new(JobRocks { db: Some(db), _env: self.clone() }));
        }
        let mut backend = self.open(operator, subtask, descriptors.clone())?;
        let start = key_groups.start.to_be_bytes();
        let end = key_groups.end.to_be_bytes();
        for (i, part) in overlapping.into_iter().enumerate() {
            let dir = self.root.join(format!("{operator}-{subtask}-restore-{i}"));
            place_files(part, &dir)?;
            let old = RocksDbBackend::open_existing(&dir, descriptors.clone(), 16 << 20, HashMap::new())
                .map_err(|e| StateError::new(format!("cannot restore the state of `{operator}`: {e}")))?;
            for t in 0..descriptors.len() {
                for entry in old.range(t, &start, Some(&end))? {
                    let (k, v) = entry?;
                    backend.put(t, &k, &v)?;
                }
            }
        }
        Ok(backend)
    }
}

/// Puts a snapshot's files in the (new) folder `dir`: immutable files hard-linked where the
/// file system allows, the others copied (RocksDB may rewrite them). Returns the keys by name.
fn place_files(part: &NativePart, dir: &Path) -> StateResult<HashMap<String, String>> {
    let failed = |e: std::io::Error| StateError::new(format!("cannot restore state files into {}: {e}", dir.display()));
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(failed)?;
    let mut origin = HashMap::new();
    for f in &part.files {
        let to = dir.join(&f.name);
        match &f.key {
            Some(key) => {
                crate::checkpoint::storage::link_or_copy(&f.path, &to).map_err(failed)?;
                origin.insert(f.name.clone(), key.clone());
            }
            None => {
                std::fs::copy(&f.path, &to).map_err(failed)?;
            }
        }
    }
    Ok(origin)
}

impl Drop for StateEnv {
    fn drop(&mut self) {
        // Only an empty folder: every subtask's database has removed its own by now.
        if let Some(lock) = self.lock.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            lock.release();
        }
        let _ = std::fs::remove_dir(&self.root);
    }
}

/// A subtask's RocksDB that keeps its job's folder alive.
struct JobRocks {
    db: Option<RocksDbBackend>,
    _env: Arc<StateEnv>,
}

impl JobRocks {
    fn db(&self) -> &RocksDbBackend {
        self.db.as_ref().expect("open until dropped")
    }
}

impl Drop for JobRocks {
    fn drop(&mut self) {
        // The database and its folder go before the job folder (dropped with `_env`).
        self.db = None;
    }
}

impl StateBackend for JobRocks {
    fn descriptors(&self) -> &[StateDescriptor] {
        self.db().descriptors()
    }
    fn get(&self, table: TableId, key: &[u8]) -> StateResult<Option<Vec<u8>>> {
        self.db().get(table, key)
    }
    fn put(&mut self, table: TableId, key: &[u8], value: &[u8]) -> StateResult<()> {
        self.db.as_mut().expect("open until dropped").put(table, key, value)
    }
    fn delete(&mut self, table: TableId, key: &[u8]) -> StateResult<()> {
        self.db.as_mut().expect("open until dropped").delete(table, key)
    }
    fn range<'a>(&'a self, table: TableId, start: &[u8], end: Option<&[u8]>) -> StateResult<Entries<'a>> {
        self.db().range(table, start, end)
    }
    fn native_snapshot(&mut self, checkpoint: u64) -> StateResult<Option<NativeSnapshot>> {
        self.db.as_mut().expect("open until dropped").native_snapshot(checkpoint)
    }
}

impl From<StateError> for crate::runtime::OperatorError {
    fn from(e: StateError) -> Self {
        crate::runtime::OperatorError::new(format!("state: {e}"))
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
    fn key_group_ranges_are_what_each_subtask_owns() {
        for (max, p) in [(128, 1), (128, 3), (7, 4), (5, 5), (2, 4), (32768, 7)] {
            let mut next = 0;
            for i in 0..p {
                let r = key_group_range(i, max, p);
                assert_eq!(r.start, next, "max {max}, p {p}, subtask {i}");
                next = r.end;
                for kg in r {
                    assert_eq!(subtask_for_key_group(u32::from(kg), max, p), i);
                }
            }
            assert_eq!(u32::from(next), max);
        }
    }

    #[test]
    fn rocksdb_state_lives_in_a_job_folder_removed_at_the_end() {
        let base = tempfile::tempdir().unwrap();
        let config = StateConfig {
            backend: StateBackendKind::Rocksdb,
            path: Some(base.path().display().to_string()),
            memory: Some(crate::spec::values::ByteSize(64 << 20)),
        };
        let env = StateEnv::new("my job", Some(&config), 2);
        assert_eq!(env.per_subtask_memory, 32 << 20);
        let desc = vec![StateDescriptor::new("acc", backend::StateKind::Value, "bytes")];
        let mut a = env.open("w", 0, desc.clone()).unwrap();
        let b = env.open("w", 1, desc).unwrap();
        a.put(0, b"k", b"v").unwrap();
        assert_eq!(a.get(0, b"k").unwrap(), Some(b"v".to_vec()));
        let root = env.root().to_path_buf();
        assert!(root.join("w-0").is_dir() && root.join("w-1").is_dir());
        assert!(root.file_name().unwrap().to_str().unwrap().starts_with("sluice-my_job-"));
        drop(env);
        drop(a);
        assert!(root.is_dir(), "still in use by subtask 1");
        drop(b);
        assert!(!root.exists());
        assert_eq!(std::fs::read_dir(base.path()).unwrap().count(), 0);
    }
}
