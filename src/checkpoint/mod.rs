//! Checkpoints: what a job writes so that it can resume after a crash, and where.
//!
//! A checkpoint `N` is a folder `chk-N` (a savepoint: `sp-N`) in the job's [`storage`]: per
//! stateful subtask a sealed blob and, for RocksDB state, the SST and metadata files it did not
//! share with the previous completed checkpoint (those it shares stay in that checkpoint's
//! folder and are referred to), uploaded as subtasks snapshot; and `_manifest.json`, written
//! last and create-if-absent. The manifest is the commit point: a folder without one
//! is an incomplete checkpoint and is never loaded. Small state (source positions, a sink's
//! pending files, an operator's watermark) lives inline in the manifest.
//!
//! This module owns the stored format (manifests, sealed blobs), finding the latest complete
//! checkpoint (skipping corrupt ones), retention, and the lease that keeps two runs of a
//! pipeline off one storage. The barrier protocol itself is in [`crate::runtime`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use twox_hash::XxHash64;

pub mod compat;
pub mod storage;

pub use storage::{S3Options, Storage, StorageError, StorageResult};

/// The manifest format this build writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// The name of a checkpoint's manifest inside its folder.
pub const MANIFEST: &str = "_manifest.json";

/// The name of the lease object at the storage root.
pub const LEASE: &str = "_lease.json";

/// The name of a request to stop with a savepoint, at the storage root (see [`request_stop`]).
pub const STOP_REQUEST: &str = "_stop.json";

/// What an operator's subtask hands over at a barrier.
#[derive(Debug, Default)]
pub struct OperatorSnapshot {
    /// Small state kept inline in the manifest (positions, pending files, a watermark).
    pub meta: serde_json::Value,
    /// Bulk state uploaded as its own object (keyed state).
    pub blob: Option<Vec<u8>>,
    /// Keyed state as the backend's own files (RocksDB), uploaded incrementally: a file
    /// whose key a completed checkpoint already stored is referred to, not uploaded again.
    pub native: Option<crate::state::backend::NativeSnapshot>,
}

/// A stored file of a native snapshot (see [`OperatorSnapshot::native`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Its name in the backend's folder.
    pub file: String,
    /// The identity of an immutable file, shared by every checkpoint that refers to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The object's name relative to the storage root (possibly in an older checkpoint's folder).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its XXH64, checked when it is fetched back.
    pub xxh64: u64,
}

/// A stored blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// Its name relative to the storage root.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// One subtask's part of one operator's state in a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateHandle {
    /// The operator's id.
    pub operator: String,
    /// The subtask that wrote it.
    pub subtask: usize,
    /// Inline state.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub meta: serde_json::Value,
    /// Uploaded state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<BlobRef>,
    /// Native snapshot files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileRef>,
}

impl StateHandle {
    /// Names of every object it refers to.
    pub fn objects(&self) -> impl Iterator<Item = &str> {
        self.stored().map(|(name, _)| name)
    }

    /// Every object it refers to, with its size.
    pub fn stored(&self) -> impl Iterator<Item = (&str, u64)> {
        let blob = self.blob.iter().map(|b| (b.name.as_str(), b.size));
        blob.chain(self.files.iter().map(|f| (f.name.as_str(), f.size)))
    }

    /// Bytes of the objects it refers to.
    pub fn bytes(&self) -> u64 {
        self.stored().map(|(_, size)| size).sum()
    }
}

/// One operator in a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorEntry {
    /// The operator's id (its spec name).
    pub id: String,
    /// Subtasks it ran with.
    pub parallelism: usize,
    /// What its state means (keys, window, aggregates), for compatibility checks.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub fingerprint: serde_json::Value,
    /// Each subtask's state.
    pub subtasks: Vec<StateHandle>,
}

/// A complete checkpoint's description: the commit point of the checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The manifest format.
    pub format: u32,
    /// The pipeline's name; a manifest of another pipeline is refused.
    pub pipeline: String,
    /// The checkpoint's id.
    pub id: u64,
    /// Whether it is a savepoint (taken on request; not removed by retention).
    pub savepoint: bool,
    /// The job attempt that took it.
    pub generation: u64,
    /// When it completed, RFC 3339.
    pub time: String,
    /// From trigger to complete, ms.
    pub duration_ms: u64,
    /// Key groups of the job.
    pub max_parallelism: u32,
    /// The key hash version state was partitioned with.
    pub key_hash_version: u32,
    /// Every operator with state, in plan order.
    pub operators: Vec<OperatorEntry>,
    /// Per source, the splits its enumerator dealt (a restored job gets the same ones).
    pub splits: BTreeMap<String, Vec<String>>,
}

impl Manifest {
    /// The folder of checkpoint `id` (`chk-…` or `sp-…`).
    pub fn folder(id: u64, savepoint: bool) -> String {
        format!("{}-{id:010}", if savepoint { "sp" } else { "chk" })
    }

    /// This checkpoint's folder.
    pub fn dir(&self) -> String {
        Manifest::folder(self.id, self.savepoint)
    }

    /// Bytes of state it refers to (its own and files stored by earlier checkpoints).
    pub fn state_bytes(&self) -> u64 {
        self.handles().map(StateHandle::bytes).sum()
    }

    /// Bytes of state stored in its own folder: what this checkpoint uploaded.
    pub fn new_bytes(&self) -> u64 {
        let dir = format!("{}/", self.dir());
        self.handles().flat_map(StateHandle::stored).filter(|(name, _)| name.starts_with(&dir)).map(|(_, s)| s).sum()
    }

    /// Every subtask's state handle.
    pub fn handles(&self) -> impl Iterator<Item = &StateHandle> {
        self.operators.iter().flat_map(|o| &o.subtasks)
    }

    /// The entry of operator `id`.
    pub fn operator(&self, id: &str) -> Option<&OperatorEntry> {
        self.operators.iter().find(|o| o.id == id)
    }
}

const BLOB_MAGIC: &[u8; 8] = b"SLUICEBL";

/// Wraps state bytes with a header and a checksum, so a truncated or corrupt object is
/// recognised when it is read back.
pub fn seal(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 24);
    out.extend_from_slice(BLOB_MAGIC);
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
    out.extend_from_slice(&XxHash64::oneshot(0, bytes).to_be_bytes());
    out
}

/// The bytes [`seal`] wrapped, or why they are unreadable.
pub fn unseal(sealed: &[u8]) -> Result<&[u8], String> {
    if sealed.len() < 24 || &sealed[..8] != BLOB_MAGIC {
        return Err("not a Sluice state object".into());
    }
    let len = u64::from_be_bytes(sealed[8..16].try_into().expect("8 bytes")) as usize;
    if sealed.len() != len.saturating_add(24) {
        return Err(format!("truncated: {} bytes where {} were written", sealed.len(), len.saturating_add(24)));
    }
    let body = &sealed[16..16 + len];
    let sum = u64::from_be_bytes(sealed[16 + len..].try_into().expect("8 bytes"));
    if XxHash64::oneshot(0, body) != sum {
        return Err("checksum mismatch".into());
    }
    Ok(body)
}

/// A checkpoint read back whole, its blobs checked.
#[derive(Debug, Clone)]
pub struct Restored {
    /// Its manifest.
    pub manifest: Manifest,
    /// Blob contents (unsealed) by (operator, subtask).
    pub blobs: HashMap<(String, usize), Vec<u8>>,
    /// Where it was read from (for messages).
    pub location: String,
    /// The storage it was read from.
    pub storage: Storage,
    /// Its native snapshot files, fetched and checked (when they were asked for).
    pub staged: Option<Arc<Staged>>,
}

impl Restored {
    /// The state every subtask of operator `id` wrote: inline state and blob, in subtask order.
    pub fn operator(&self, id: &str) -> Vec<(&serde_json::Value, Option<&[u8]>)> {
        let Some(o) = self.manifest.operator(id) else { return Vec::new() };
        o.subtasks.iter().map(|s| (&s.meta, self.blobs.get(&(id.to_string(), s.subtask)).map(Vec::as_slice))).collect()
    }

    /// The native snapshot files every subtask of operator `id` wrote, fetched to local paths,
    /// each with the key groups its subtask owned.
    pub fn native_parts(&self, id: &str) -> Vec<crate::state::NativePart> {
        let (Some(o), Some(staged)) = (self.manifest.operator(id), &self.staged) else { return Vec::new() };
        o.subtasks
            .iter()
            .filter(|s| !s.files.is_empty())
            .map(|s| crate::state::NativePart {
                key_groups: crate::state::key_group_range(
                    s.subtask as u32,
                    self.manifest.max_parallelism,
                    o.parallelism as u32,
                ),
                files: s
                    .files
                    .iter()
                    .map(|f| crate::state::StagedFile {
                        name: f.file.clone(),
                        path: staged.path(&f.name),
                        key: f.key.clone(),
                    })
                    .collect(),
            })
            .collect()
    }
}

/// A checkpoint's native snapshot files fetched to a local folder, removed when dropped.
#[derive(Debug)]
pub struct Staged {
    dir: std::path::PathBuf,
    _lock: Option<FolderLock>,
}

impl Staged {
    /// Where the object `name` was fetched to.
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(name.replace('/', "--"))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether [`load`] fetches native snapshot files (to restore) or only checks they are there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    /// Fetch every file to a new folder in this one (where the job's state goes, so that it
    /// can be hard-linked into place) and check its checksum.
    Files(std::path::PathBuf),
    /// Check each file's size only.
    Sizes,
}

/// The id of a checkpoint folder name (`chk-N` or `sp-N`), and whether it is a savepoint.
pub fn folder_id(dir: &str) -> Option<(u64, bool)> {
    match (dir.strip_prefix("chk-"), dir.strip_prefix("sp-")) {
        (Some(id), _) => Some((id.parse().ok()?, false)),
        (_, Some(id)) => Some((id.parse().ok()?, true)),
        _ => None,
    }
}

/// What a storage holds, from one listing.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// The largest id of any checkpoint or savepoint folder, complete or not.
    pub max_id: Option<u64>,
    /// The complete ones' ids and manifest names, newest first.
    pub manifests: Vec<(u64, String)>,
}

/// Lists `storage` once.
pub fn inventory(storage: &Storage) -> StorageResult<Inventory> {
    let mut inv = Inventory::default();
    for (name, _) in storage.list("")? {
        let Some((dir, file)) = name.split_once('/') else { continue };
        let Some((id, _)) = folder_id(dir) else { continue };
        inv.max_id = inv.max_id.max(Some(id));
        if file == MANIFEST {
            inv.manifests.push((id, name));
        }
    }
    inv.manifests.sort_by(|a, b| b.cmp(a));
    Ok(inv)
}

/// Ids of the complete checkpoints and savepoints in `storage`, newest first, with their
/// manifest names.
pub fn manifests(storage: &Storage) -> StorageResult<Vec<(u64, String)>> {
    Ok(inventory(storage)?.manifests)
}

/// Why a checkpoint cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The storage failed.
    #[error("{0}")]
    Storage(String),
    /// The checkpoint is corrupt or partial; an older one may do.
    #[error("{0}")]
    Corrupt(String),
    /// The checkpoint is another pipeline's, or of a format this build cannot read; nothing in
    /// this storage may be used.
    #[error("{0}")]
    Foreign(String),
}

impl From<StorageError> for LoadError {
    fn from(e: StorageError) -> Self {
        LoadError::Storage(e.0)
    }
}

/// Reads the checkpoint whose manifest is `manifest_name` and checks every blob and file.
pub fn load(storage: &Storage, manifest_name: &str, pipeline: &str, fetch: &Fetch) -> Result<Restored, LoadError> {
    let location = format!("{}/{manifest_name}", storage.url().trim_end_matches('/'));
    let bytes = storage
        .get(manifest_name)?
        .ok_or_else(|| LoadError::Corrupt(format!("checkpoint manifest `{location}` is missing")))?;
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| LoadError::Corrupt(format!("checkpoint manifest `{location}` is unreadable: {e}")))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(LoadError::Foreign(format!(
            "checkpoint manifest `{location}` has format {}; this build reads {MANIFEST_FORMAT}",
            manifest.format
        )));
    }
    if manifest.pipeline != pipeline {
        return Err(LoadError::Foreign(format!(
            "checkpoint `{location}` belongs to pipeline `{}`, not `{pipeline}`; use another storage, \
             or `--fresh` to ignore it",
            manifest.pipeline
        )));
    }
    let mut blobs = HashMap::new();
    for o in &manifest.operators {
        for s in &o.subtasks {
            let Some(b) = &s.blob else { continue };
            let shown = format!("{}/{}", storage.url().trim_end_matches('/'), b.name);
            let sealed = storage
                .get(&b.name)?
                .ok_or_else(|| LoadError::Corrupt(format!("checkpoint file `{shown}` is missing")))?;
            let body = unseal(&sealed)
                .map_err(|why| LoadError::Corrupt(format!("checkpoint file `{shown}` is corrupt ({why})")))?;
            blobs.insert((o.id.clone(), s.subtask), body.to_vec());
        }
    }
    let files: Vec<&FileRef> = manifest.handles().flat_map(|s| &s.files).collect();
    // A file name is placed in a local folder: a separator or `..` in it would reach outside.
    if let Some(f) = files.iter().find(|f| f.file.is_empty() || f.file.contains(['/', '\\']) || f.file == "..") {
        return Err(LoadError::Corrupt(format!("checkpoint manifest `{location}` names a state file `{}`", f.file)));
    }
    let staged = match fetch {
        _ if files.is_empty() => None,
        Fetch::Sizes => {
            for f in files {
                check_file(storage, f, storage.size_if_exists(&f.name)?.map(|size| (size, f.xxh64)))?;
            }
            None
        }
        Fetch::Files(base) => {
            use std::hash::{BuildHasher, Hasher};
            let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
            remove_abandoned(base, "sluice-restore-");
            let dir = base.join(format!("sluice-restore-{}-{random:016x}", std::process::id()));
            let cannot = |e: std::io::Error| LoadError::Storage(format!("cannot create {}: {e}", dir.display()));
            std::fs::create_dir_all(&dir).map_err(cannot)?;
            let lock = Some(FolderLock::take(&dir).map_err(cannot)?);
            let staged = Staged { dir, _lock: lock };
            let items: Vec<(&str, std::path::PathBuf)> =
                files.iter().map(|f| (f.name.as_str(), staged.path(&f.name))).collect();
            for (f, found) in files.iter().zip(storage.fetch_many(&items)) {
                check_file(storage, f, found?)?;
            }
            Some(Arc::new(staged))
        }
    };
    Ok(Restored { manifest, blobs, location, storage: storage.clone(), staged })
}

/// A native snapshot file found with `found` (size and XXH64), or why the checkpoint is corrupt.
fn check_file(storage: &Storage, f: &FileRef, found: Option<(u64, u64)>) -> Result<(), LoadError> {
    let shown = format!("{}/{}", storage.url().trim_end_matches('/'), f.name);
    match found {
        None => Err(LoadError::Corrupt(format!("checkpoint file `{shown}` is missing"))),
        Some((size, _)) if size != f.size => Err(LoadError::Corrupt(format!(
            "checkpoint file `{shown}` is corrupt (truncated: {size} bytes where {} were written)",
            f.size
        ))),
        Some((_, hash)) if hash != f.xxh64 => {
            Err(LoadError::Corrupt(format!("checkpoint file `{shown}` is corrupt (checksum mismatch)")))
        }
        Some(_) => Ok(()),
    }
}

/// The latest complete checkpoint or savepoint of `pipeline` in `storage` that reads back
/// whole; corrupt ones are skipped, each with a message in `skipped`.
pub fn latest(
    storage: &Storage,
    pipeline: &str,
    fetch: &Fetch,
    skipped: &mut Vec<String>,
) -> Result<Option<Restored>, LoadError> {
    latest_of(storage, &manifests(storage)?, pipeline, fetch, skipped)
}

/// [`latest`] among `manifests` (newest first, as [`Inventory::manifests`]).
pub fn latest_of(
    storage: &Storage,
    manifests: &[(u64, String)],
    pipeline: &str,
    fetch: &Fetch,
    skipped: &mut Vec<String>,
) -> Result<Option<Restored>, LoadError> {
    for (_, name) in manifests {
        match load(storage, name, pipeline, fetch) {
            Ok(r) => return Ok(Some(r)),
            Err(LoadError::Corrupt(why)) => skipped.push(why),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Opens what `location` names: a checkpoint or savepoint (its folder, such as
/// `…/chk-0000000012`, or its manifest), or a storage URL or folder (meaning its latest
/// complete checkpoint; `Ok(None)` when it has none). A relative location is looked up in
/// `inside` when given.
pub fn open_location(
    location: &str,
    inside: Option<&Storage>,
    s3: Option<&S3Options>,
    pipeline: &str,
    fetch: &Fetch,
) -> Result<Option<Restored>, String> {
    let trimmed = location.trim_end_matches('/');
    let trimmed = trimmed.strip_suffix(MANIFEST).map_or(trimmed, |t| t.trim_end_matches('/'));
    let (parent, last) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    let is_checkpoint = folder_id(last).is_some();
    let relative = !location.contains("://") && !location.starts_with('/');
    if let (true, Some(storage)) = (relative, inside) {
        if !is_checkpoint {
            return Err(format!(
                "`{location}` is not a checkpoint or savepoint folder (`chk-N` or `sp-N`) of `{}`",
                storage.url()
            ));
        }
        return load(storage, &format!("{trimmed}/{MANIFEST}"), pipeline, fetch).map(Some).map_err(|e| e.to_string());
    }
    if !is_checkpoint {
        let storage = Storage::open_existing(location, s3).map_err(|e| e.0)?;
        let mut skipped = Vec::new();
        let found = latest(&storage, pipeline, fetch, &mut skipped).map_err(|e| e.to_string())?;
        for s in skipped {
            eprintln!("skipping a checkpoint: {s}");
        }
        return Ok(found);
    }
    let storage = Storage::open_existing(if parent.is_empty() { "." } else { parent }, s3).map_err(|e| e.0)?;
    load(&storage, &format!("{last}/{MANIFEST}"), pipeline, fetch).map(Some).map_err(|e| e.to_string())
}

/// Removes checkpoints (not savepoints) beyond the newest `retain` complete ones, and
/// incomplete checkpoint folders older than `latest`. An object a kept checkpoint or a
/// savepoint references (a finished subtask's state is carried forward by reference) stays.
pub fn retain(storage: &Storage, retain: usize, latest: u64) -> StorageResult<()> {
    let objects = storage.list("")?;
    let mut complete: Vec<u64> = Vec::new();
    let mut folders: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut savepoints = Vec::new();
    for (name, _) in objects {
        let Some((dir, file)) = name.split_once('/') else { continue };
        if dir.starts_with("sp-") && file == MANIFEST {
            savepoints.push(name.clone());
        }
        let Some((id, false)) = folder_id(dir) else { continue };
        if file == MANIFEST {
            complete.push(id);
        }
        folders.entry(id).or_default().push(name);
    }
    complete.sort_unstable_by(|a, b| b.cmp(a));
    let keep: Vec<u64> = complete.iter().take(retain.max(1)).copied().collect();
    let mut referenced = std::collections::HashSet::new();
    let kept_manifests = keep.iter().map(|id| format!("{}/{MANIFEST}", Manifest::folder(*id, false)));
    for name in kept_manifests.chain(savepoints) {
        let Some(bytes) = storage.get(&name)? else { continue };
        // Without every kept manifest's references nothing can be deleted safely.
        let m = serde_json::from_slice::<Manifest>(&bytes)
            .map_err(|e| StorageError(format!("`{name}` is unreadable ({e}); old checkpoints are kept")))?;
        referenced.extend(m.handles().flat_map(StateHandle::objects).map(str::to_string));
    }
    for (id, names) in folders {
        if keep.contains(&id) || id >= latest {
            continue;
        }
        // The manifest goes first: a folder half deleted is then an incomplete checkpoint.
        let mut names = names;
        names.sort_by_key(|n| !n.ends_with(MANIFEST));
        for n in names.iter().filter(|n| !referenced.contains(*n)) {
            storage.delete(n)?;
        }
    }
    Ok(())
}

/// Who holds a storage: written create-if-absent at the root and renewed while the job runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The pipeline.
    pub pipeline: String,
    /// A random id of the holder.
    pub owner: String,
    /// The holder's process id.
    pub pid: u32,
    /// The holder's host name.
    pub host: String,
    /// Until when it holds, ms since the epoch, unless renewed.
    pub expires_ms: i64,
}

/// How long a lease holds without renewal.
pub const LEASE_TTL_MS: i64 = 15_000;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}

/// The lock file of a folder a run uses (see [`FolderLock`]).
const FOLDER_LOCK: &str = ".sluice-lock";

/// An exclusive lock on a local folder a run works in (state, restore staging, sink
/// staging), held while this value lives and released by the kernel when the process dies:
/// [`remove_abandoned`] removes only folders whose lock nobody holds.
#[derive(Debug)]
pub struct FolderLock {
    /// `None` on a file system without `flock` (the folder is then never taken for abandoned).
    held: Option<(std::fs::File, std::path::PathBuf)>,
}

impl FolderLock {
    /// Locks `dir` (which must exist).
    pub fn take(dir: &std::path::Path) -> std::io::Result<FolderLock> {
        use std::os::fd::AsRawFd;
        let path = dir.join(FOLDER_LOCK);
        // Locked under a name of its own, then renamed: the lock file is never there unlocked.
        let tmp = dir.join(format!("{FOLDER_LOCK}.{}", std::process::id()));
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&tmp)?;
        // SAFETY: flock on a descriptor this value owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            let _ = std::fs::remove_file(&tmp);
            return match e.raw_os_error() {
                Some(libc::ENOLCK | libc::EOPNOTSUPP | libc::ENOSYS) => Ok(FolderLock { held: None }),
                _ => Err(e),
            };
        }
        if path.exists() {
            let _ = std::fs::remove_file(&tmp);
            return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "the folder is locked already"));
        }
        std::fs::rename(&tmp, &path)?;
        Ok(FolderLock { held: Some((file, path)) })
    }

    /// Unlocks and removes the lock file, so the folder can be removed once empty.
    pub fn release(self) {
        if let Some((file, path)) = self.held {
            let _ = std::fs::remove_file(&path);
            drop(file);
        }
    }
}

/// Removes the folders in `base` whose names start with `prefix` and that a run left behind
/// when it was killed: those with a lock file ([`FolderLock`]) nobody holds. A folder without
/// one is left alone.
pub fn remove_abandoned(base: &std::path::Path, prefix: &str) {
    use std::os::fd::AsRawFd;
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for e in entries.flatten() {
        if !e.file_name().to_str().is_some_and(|n| n.starts_with(prefix)) {
            continue;
        }
        let path = e.path().join(FOLDER_LOCK);
        let Ok(lock) = std::fs::File::open(&path) else { continue };
        // SAFETY: flock on a descriptor owned here; the lock goes with it.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            continue;
        }
        // A run that released its lock removed the file first: only the file still in place
        // counts (its holder died with it locked).
        use std::os::unix::fs::MetadataExt;
        let same = match (lock.metadata(), std::fs::metadata(&path)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if same {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn process_alive(pid: u32) -> bool {
    // A killed process nobody has reaped yet (a zombie, common under a container's PID 1)
    // still answers signal 0: its state in /proc says it is dead.
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        && let Some(state) = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next())
    {
        return !matches!(state, 'Z' | 'X');
    }
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl Lease {
    /// Takes the lease of `storage` for `pipeline`: refused while another live run holds it.
    /// A lease whose holder is gone (expired, or a dead process on this host) is taken over.
    pub fn acquire(storage: &Storage, pipeline: &str) -> StorageResult<Lease> {
        use std::hash::{BuildHasher, Hasher};
        let owner = format!("{:016x}", std::collections::hash_map::RandomState::new().build_hasher().finish());
        let lease =
            Lease { pipeline: pipeline.into(), owner, pid: std::process::id(), host: host_name(), expires_ms: 0 };
        for _ in 0..3 {
            let mut mine = lease.clone();
            mine.expires_ms = now_ms() + LEASE_TTL_MS;
            if storage.put_if_absent(LEASE, serde_json::to_vec(&mine).expect("a lease serializes"))? {
                return Ok(mine);
            }
            let held = Lease::held(storage)?;
            let stale = match &held {
                None => true,
                Some(h) => h.expires_ms < now_ms() || (h.host == mine.host && !process_alive(h.pid)),
            };
            if !stale {
                let h = held.expect("not stale, so present");
                return Err(StorageError(format!(
                    "storage `{}` is in use by another run of `{}` (process {} on host `{}`); \
                     a second run would corrupt its checkpoints",
                    storage.url(),
                    h.pipeline,
                    h.pid,
                    h.host
                )));
            }
            storage.delete(LEASE)?;
        }
        Err(StorageError(format!("cannot take the lease of storage `{}`: it keeps changing", storage.url())))
    }

    /// The lease stored in `storage`, if any (an unreadable one counts as none).
    pub fn held(storage: &Storage) -> StorageResult<Option<Lease>> {
        Ok(storage.get(LEASE)?.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Extends the lease; fails if another run took it over.
    pub fn renew(&mut self, storage: &Storage) -> StorageResult<()> {
        let held = Lease::held(storage)?;
        if held.as_ref().is_some_and(|h| h.owner != self.owner) {
            return Err(StorageError(format!("another run took over the lease of storage `{}`", storage.url())));
        }
        self.expires_ms = now_ms() + LEASE_TTL_MS;
        storage.put(LEASE, serde_json::to_vec(self).expect("a lease serializes"))
    }

    /// Whether a stop with savepoint was asked of this run ([`request_stop`]); the request is
    /// removed when read, and so is one addressed to an earlier run.
    pub fn stop_requested(&self, storage: &Storage) -> StorageResult<bool> {
        let Some(bytes) = storage.get(STOP_REQUEST)? else { return Ok(false) };
        storage.delete(STOP_REQUEST)?;
        Ok(serde_json::from_slice::<StopRequest>(&bytes).is_ok_and(|r| r.owner == self.owner))
    }

    /// Gives the lease up.
    pub fn release(&self, storage: &Storage) {
        if Lease::held(storage).ok().flatten().is_some_and(|h| h.owner == self.owner) {
            let _ = storage.delete(LEASE);
        }
    }
}

/// Keeps a lease renewed from a thread of its own, so that a long restore or deployment does
/// not let it expire; reports what the run must act on: a lease another run took over, a stop
/// request ([`request_stop`]), renewals that failed. Dropping it gives the lease up (waiting at
/// most 2 s for a storage call in progress).
#[derive(Debug)]
pub struct LeaseKeeper {
    shared: Arc<KeeperState>,
    wake: std::sync::mpsc::Sender<()>,
    done: std::sync::mpsc::Receiver<()>,
}

#[derive(Debug, Default)]
struct KeeperState {
    stop_requested: std::sync::atomic::AtomicBool,
    lost: std::sync::Mutex<Option<String>>,
    problems: std::sync::Mutex<Vec<String>>,
}

impl LeaseKeeper {
    /// Renews `lease` of `storage` every `every` until dropped.
    pub fn start(lease: Lease, storage: Storage, every: std::time::Duration) -> std::io::Result<LeaseKeeper> {
        use std::sync::mpsc::RecvTimeoutError;
        let shared = Arc::new(KeeperState::default());
        let (wake, woken) = std::sync::mpsc::channel::<()>();
        let (finished, done) = std::sync::mpsc::channel::<()>();
        let (mut mine, state) = (lease, shared.clone());
        std::thread::Builder::new().name("lease".into()).spawn(move || {
            let mut lost = false;
            while let Err(RecvTimeoutError::Timeout) = woken.recv_timeout(every) {
                match mine.renew(&storage) {
                    Err(e) if e.0.contains("took over") => {
                        *state.lost.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.0);
                        lost = true;
                        break;
                    }
                    Err(e) => state.problems.lock().unwrap_or_else(|e| e.into_inner()).push(e.0),
                    Ok(()) => {
                        if mine.stop_requested(&storage).unwrap_or(false) {
                            state.stop_requested.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            }
            if !lost {
                mine.release(&storage);
            }
            let _ = finished.send(());
        })?;
        Ok(LeaseKeeper { shared, wake, done })
    }

    /// Why the lease is lost (another run took it over), if it is.
    pub fn lost(&self) -> Option<String> {
        self.shared.lost.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether a stop with savepoint was asked since the last call.
    pub fn take_stop_request(&self) -> bool {
        self.shared.stop_requested.swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// Renewals that failed since the last call (the storage could not be reached).
    pub fn take_problems(&self) -> Vec<String> {
        std::mem::take(&mut *self.shared.problems.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for LeaseKeeper {
    /// Wakes the renewing thread, which gives the lease up and ends; waits for it a little.
    fn drop(&mut self) {
        let _ = self.wake.send(());
        let _ = self.done.recv_timeout(std::time::Duration::from_secs(2));
    }
}

/// A request to the run holding a storage's lease to stop with a savepoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRequest {
    /// The lease owner asked.
    pub owner: String,
    /// When, RFC 3339.
    pub requested: String,
}

/// Asks the run of `pipeline` holding `storage` to stop with a savepoint (it looks each time it
/// renews its lease); returns that run's lease. An error when no live run holds it.
pub fn request_stop(storage: &Storage, pipeline: &str) -> StorageResult<Lease> {
    let Some(lease) = Lease::held(storage)?.filter(|h| h.expires_ms >= now_ms() && h.pipeline == pipeline) else {
        return Err(StorageError(format!("no run of `{pipeline}` holds storage `{}`", storage.url())));
    };
    let request = StopRequest {
        owner: lease.owner.clone(),
        requested: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    storage.put(STOP_REQUEST, serde_json::to_vec(&request).expect("a request serializes"))?;
    Ok(lease)
}

/// Whether `lease` still holds `storage` (the same owner, not expired).
pub fn still_held(storage: &Storage, lease: &Lease) -> StorageResult<bool> {
    Ok(Lease::held(storage)?.is_some_and(|h| h.owner == lease.owner && h.expires_ms >= now_ms()))
}

/// One fault-injection variable: `<point>:<n>` names the `n`th time the process reaches `point`.
struct Injection {
    var: &'static str,
    target: std::sync::OnceLock<Option<(String, u64)>>,
    seen: std::sync::atomic::AtomicU64,
}

impl Injection {
    const fn new(var: &'static str) -> Injection {
        Injection { var, target: std::sync::OnceLock::new(), seen: std::sync::atomic::AtomicU64::new(0) }
    }

    /// The `n` of the variable if this call to `point` is the `n`th.
    fn hit(&self, point: &str) -> Option<u64> {
        let target = self.target.get_or_init(|| {
            let v = std::env::var(self.var).ok()?;
            let (p, n) = v.split_once(':')?;
            Some((p.to_string(), n.parse().ok()?))
        });
        let (_, n) = target.as_ref().filter(|(p, _)| p == point)?;
        (self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == *n).then_some(*n)
    }
}

/// Fault injection for crash tests: with `SLUICE_CRASH_AT=<point>:<n>` in the environment,
/// the process aborts (as abruptly as SIGKILL: no cleanup) the `n`th time it reaches `point`:
/// `upload` (a snapshot blob about to be stored), `manifest` (right after a manifest is
/// written, before anyone is told) or `commit` (a sink between committing two files).
pub fn crash_point(point: &str) {
    static CRASH: Injection = Injection::new("SLUICE_CRASH_AT");
    if let Some(n) = CRASH.hit(point) {
        eprintln!("SLUICE_CRASH_AT: aborting at {point} #{n}");
        std::process::abort();
    }
}

/// Fault injection for restart tests: with `SLUICE_FAIL_AT=<point>:<n>` in the environment,
/// the `n`th time the process reaches `point` (the points of [`crash_point`]) fails with a
/// retryable error, as an outside system's hiccup would.
pub fn fail_point(point: &str) -> Result<(), crate::runtime::OperatorError> {
    static FAIL: Injection = Injection::new("SLUICE_FAIL_AT");
    match FAIL.hit(point) {
        Some(n) => Err(crate::runtime::OperatorError::external(format!("injected failure at {point} #{n}"), true)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn only_folders_whose_lock_nobody_holds_are_removed_as_abandoned() {
        let base = tempfile::tempdir().unwrap();
        let folder = |name: &str| {
            let d = base.path().join(name);
            std::fs::create_dir(&d).unwrap();
            d
        };
        let live = folder("sluice-x-live");
        let _held = FolderLock::take(&live).unwrap();
        let dead = folder("sluice-x-dead");
        // Dropped without `release`, as a killed run leaves it.
        drop(FolderLock::take(&dead).unwrap());
        // A run that was taking its lock when it died: only a lock file of its own name.
        let starting = folder("sluice-x-starting");
        std::fs::write(starting.join(format!("{FOLDER_LOCK}.1")), "").unwrap();
        let unlocked = folder("sluice-x-nolock");
        let other = folder("other-dead");
        drop(FolderLock::take(&other).unwrap());
        remove_abandoned(base.path(), "sluice-x-");
        assert!(live.exists(), "a held lock keeps its folder");
        assert!(!dead.exists(), "an abandoned folder goes");
        assert!(starting.exists(), "a folder whose lock was never in place is not judged");
        assert!(unlocked.exists(), "a folder without a lock file is not judged");
        assert!(other.exists(), "only names with the prefix");
        assert!(FolderLock::take(&live).is_err(), "one holder at a time");
    }
    use super::*;

    #[test]
    fn sealed_blobs_detect_truncation_and_corruption() {
        let sealed = seal(b"state bytes");
        assert_eq!(unseal(&sealed).unwrap(), b"state bytes");
        assert!(unseal(&sealed[..sealed.len() - 1]).unwrap_err().contains("truncated"));
        let mut bad = sealed.clone();
        bad[18] ^= 1;
        assert!(unseal(&bad).unwrap_err().contains("checksum"));
        assert!(unseal(b"hello").is_err());
    }

    #[test]
    #[allow(clippy::zombie_processes)] // the point: a child that exited and was not reaped
    fn a_process_that_exited_unreaped_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!process_alive(pid), "a zombie");
        assert!(process_alive(std::process::id()));
        child.wait().unwrap();
    }

    #[test]
    fn a_second_lease_is_refused_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(&format!("file://{}", dir.path().display()), None).unwrap();
        let a = Lease::acquire(&s, "p").unwrap();
        let e = Lease::acquire(&s, "p").unwrap_err();
        assert!(e.0.contains("in use by another run of `p`"), "{e}");
        a.release(&s);
        Lease::acquire(&s, "p").unwrap();
    }

    #[test]
    fn state_files_are_fetched_checked_and_kept_inside_their_folder() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path().join("store").to_str().unwrap(), None).unwrap();
        let (size, xxh64) = (5, twox_hash::XxHash64::oneshot(0, b"12345"));
        s.put("chk-0000000001/w-0-g1/000007.sst", b"12345".to_vec()).unwrap();
        s.put("chk-0000000002/w-0-g1/000007.sst", b"12345".to_vec()).unwrap();
        s.put("chk-0000000002/w-0-g1/000009.sst", b"12x45".to_vec()).unwrap();
        let write = |id: u64, files: Vec<FileRef>| {
            let mut m: Manifest = serde_json::from_slice(&manifest(id, false, &[])).unwrap();
            m.operators[0].subtasks = vec![StateHandle {
                operator: "w".into(),
                subtask: 0,
                meta: serde_json::Value::Null,
                blob: None,
                files,
            }];
            s.put(&format!("{}/{MANIFEST}", Manifest::folder(id, false)), serde_json::to_vec(&m).unwrap()).unwrap();
        };
        let file = |file: &str, name: &str| FileRef {
            file: file.into(),
            key: Some(format!("k-{file}")),
            name: name.into(),
            size,
            xxh64,
        };
        write(1, vec![file("000007.sst", "chk-0000000001/w-0-g1/000007.sst")]);
        let fetch = Fetch::Files(dir.path().join("state"));
        let restored = load(&s, &format!("chk-0000000001/{MANIFEST}"), "p", &fetch).unwrap();
        let parts = restored.native_parts("w");
        assert_eq!(std::fs::read(&parts[0].files[0].path).unwrap(), b"12345", "fetched to a local path");
        assert!(parts[0].files[0].path.starts_with(dir.path().join("state")), "next to the state");
        drop(parts);
        drop(restored);
        // The staging folder goes with the restored checkpoint.
        assert_eq!(std::fs::read_dir(dir.path().join("state")).unwrap().count(), 0);

        // Same size, other bytes: corrupt. A name that would leave the folder: refused.
        write(2, vec![file("000009.sst", "chk-0000000002/w-0-g1/000009.sst")]);
        let err = load(&s, &format!("chk-0000000002/{MANIFEST}"), "p", &fetch).unwrap_err();
        assert!(err.to_string().contains("000009.sst` is corrupt (checksum mismatch)"), "{err}");
        write(2, vec![file("../000007.sst", "chk-0000000002/w-0-g1/000007.sst")]);
        let err = load(&s, &format!("chk-0000000002/{MANIFEST}"), "p", &Fetch::Sizes).unwrap_err();
        assert!(matches!(&err, LoadError::Corrupt(m) if m.contains("names a state file `../000007.sst`")), "{err}");
        write(2, vec![file("000008.sst", "chk-0000000002/w-0-g1/000008.sst")]);
        let err = load(&s, &format!("chk-0000000002/{MANIFEST}"), "p", &Fetch::Sizes).unwrap_err();
        assert!(matches!(&err, LoadError::Corrupt(m) if m.contains("000008.sst` is missing")), "{err}");
    }

    #[test]
    fn a_lease_keeper_renews_hears_stop_requests_notices_a_takeover_and_releases_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path().to_str().unwrap(), None).unwrap();
        let wait_for = |what: &dyn Fn() -> bool| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !what() {
                assert!(std::time::Instant::now() < deadline, "timed out");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        };
        let lease = Lease::acquire(&s, "p").unwrap();
        let first_expiry = lease.expires_ms;
        let keeper = LeaseKeeper::start(lease.clone(), s.clone(), std::time::Duration::from_millis(20)).unwrap();
        let held = || serde_json::from_slice::<Lease>(&s.get(LEASE).unwrap().unwrap()).unwrap();
        wait_for(&|| held().expires_ms > first_expiry);
        request_stop(&s, "p").unwrap();
        wait_for(&|| keeper.take_stop_request());
        drop(keeper);
        assert!(s.get(LEASE).unwrap().is_none(), "dropping the keeper gives the lease up");

        let lease = Lease::acquire(&s, "p").unwrap();
        let keeper = LeaseKeeper::start(lease, s.clone(), std::time::Duration::from_millis(20)).unwrap();
        let mut other = held();
        other.owner = "someone else".into();
        s.put(LEASE, serde_json::to_vec(&other).unwrap()).unwrap();
        wait_for(&|| keeper.lost().is_some());
        assert!(keeper.lost().unwrap().contains("took over"));
        drop(keeper);
        assert_eq!(held().owner, "someone else", "a lost lease is not released");
    }

    fn manifest(id: u64, savepoint: bool, blobs: &[&str]) -> Vec<u8> {
        let subtasks = blobs
            .iter()
            .enumerate()
            .map(|(i, b)| StateHandle {
                operator: "w".into(),
                subtask: i,
                meta: serde_json::Value::Null,
                blob: Some(BlobRef { name: b.to_string(), size: 1 }),
                files: Vec::new(),
            })
            .collect();
        let m = Manifest {
            format: MANIFEST_FORMAT,
            pipeline: "p".into(),
            id,
            savepoint,
            generation: 1,
            time: String::new(),
            duration_ms: 0,
            max_parallelism: 128,
            key_hash_version: 1,
            operators: vec![OperatorEntry {
                id: "w".into(),
                parallelism: 1,
                fingerprint: Default::default(),
                subtasks,
            }],
            splits: BTreeMap::new(),
        };
        serde_json::to_vec(&m).unwrap()
    }

    #[test]
    fn retention_keeps_the_newest_complete_checkpoints_and_what_they_reference() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path().to_str().unwrap(), None).unwrap();
        for id in 1..=4u64 {
            s.put(&format!("{}/a-0.state", Manifest::folder(id, false)), vec![1]).unwrap();
        }
        s.put(&format!("chk-0000000001/{MANIFEST}"), manifest(1, false, &["chk-0000000001/a-0.state"])).unwrap();
        // Checkpoint 4 carries checkpoint 1's state of a finished subtask forward.
        let carried = ["chk-0000000004/a-0.state", "chk-0000000001/a-0.state"];
        s.put(&format!("chk-0000000002/{MANIFEST}"), manifest(2, false, &["chk-0000000002/a-0.state"])).unwrap();
        s.put(&format!("chk-0000000004/{MANIFEST}"), manifest(4, false, &carried)).unwrap();
        s.put(&format!("sp-0000000001/{MANIFEST}"), manifest(1, true, &[])).unwrap();
        retain(&s, 2, 4).unwrap();
        let mut left: Vec<String> = s.list("").unwrap().into_iter().map(|(n, _)| n).collect();
        left.sort();
        assert_eq!(
            left,
            [
                "chk-0000000001/a-0.state",
                "chk-0000000002/_manifest.json",
                "chk-0000000002/a-0.state",
                "chk-0000000004/_manifest.json",
                "chk-0000000004/a-0.state",
                "sp-0000000001/_manifest.json"
            ],
            "checkpoint 3 was incomplete; checkpoint 1's manifest goes, its state referenced by 4 stays"
        );
        s.put(&format!("chk-0000000004/{MANIFEST}"), b"{not json".to_vec()).unwrap();
        assert!(retain(&s, 1, 4).unwrap_err().0.contains("unreadable"), "nothing deleted blindly");
    }
}
