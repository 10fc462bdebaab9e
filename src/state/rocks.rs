//! The RocksDB state backend: one database per stateful subtask in a local folder, a column
//! family per declared state, memory bounded by `state.memory` (block cache and write
//! buffers). The write-ahead log is off: durability comes from checkpoints, not from RocksDB.
//!
//! Checkpoints are incremental: [`StateBackend::native_snapshot`] is a RocksDB checkpoint
//! (memtables flushed, SST files hard-linked), and each SST file carries a key that names it
//! for as long as it exists, so a checkpoint uploads only the SST files the previous one did
//! not have. A database restored from such files keeps their keys.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, ReadOptions, WriteOptions,
};

use super::backend::{
    Entries, NativeFile, NativeSnapshot, StateBackend, StateDescriptor, StateError, StateResult, TableId,
};

/// State in a RocksDB database that this backend owns and deletes when dropped.
pub struct RocksDbBackend {
    descriptors: Vec<StateDescriptor>,
    /// `None` only while dropping: the database closes before its folder is removed.
    db: Option<DB>,
    write: WriteOptions,
    dir: PathBuf,
    /// Random per opened database: with an SST file's name, the key of the files it writes.
    id: String,
    /// Keys of the SST files it was restored from, by file name.
    origin: HashMap<String, String>,
}

fn rocks_error(e: rocksdb::Error) -> StateError {
    StateError::new(format!("RocksDB: {e}"))
}

impl RocksDbBackend {
    /// Opens a fresh database in `dir`, which must be absent or empty (it is removed when the
    /// backend is dropped), with these states, using about `memory` bytes of RAM.
    pub fn open(dir: &Path, descriptors: Vec<StateDescriptor>, memory: usize) -> StateResult<Self> {
        if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
            return Err(StateError::new(format!("the state folder {} is not empty", dir.display())));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| StateError::new(format!("cannot create the state folder {}: {e}", dir.display())))?;
        Self::open_at(dir, descriptors, memory, HashMap::new())
    }

    /// Opens the database a native snapshot left in `dir` (removed when the backend is
    /// dropped). `origin` gives the keys of its SST files. Column families the snapshot has
    /// and `descriptors` do not declare are an error.
    pub fn open_existing(
        dir: &Path,
        descriptors: Vec<StateDescriptor>,
        memory: usize,
        origin: HashMap<String, String>,
    ) -> StateResult<Self> {
        let found = DB::list_cf(&Options::default(), dir)
            .map_err(|e| StateError::new(format!("the state in {} is unreadable: {e}", dir.display())))?;
        if let Some(extra) = found.iter().find(|f| *f != "default" && !descriptors.iter().any(|d| &d.name == *f)) {
            let _ = std::fs::remove_dir_all(dir);
            return Err(StateError::new(format!(
                "the snapshot has state `{extra}` that this operator does not declare"
            )));
        }
        Self::open_at(dir, descriptors, memory, origin).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(dir);
        })
    }

    fn open_at(
        dir: &Path,
        descriptors: Vec<StateDescriptor>,
        memory: usize,
        origin: HashMap<String, String>,
    ) -> StateResult<Self> {
        let memory = memory.max(16 << 20);
        let cache = Cache::new_lru_cache(memory / 2);
        let tables = descriptors.len().max(1);
        let per_table_buffer = (memory / 4 / tables).max(1 << 20);
        let cf_options = || {
            let mut o = Options::default();
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            table.set_cache_index_and_filter_blocks(true);
            o.set_block_based_table_factory(&table);
            o.set_write_buffer_size(per_table_buffer);
            o.set_max_write_buffer_number(2);
            o
        };
        let mut db_options = cf_options();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_db_write_buffer_size(memory / 4);
        db_options.set_max_open_files(256);
        db_options.set_keep_log_file_num(2);
        let families = descriptors.iter().map(|d| ColumnFamilyDescriptor::new(d.name.clone(), cf_options()));
        let db = DB::open_cf_descriptors(&db_options, dir, families).map_err(rocks_error)?;
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        let id = format!("{:016x}", std::collections::hash_map::RandomState::new().build_hasher().finish());
        Ok(RocksDbBackend { descriptors, db: Some(db), write, dir: dir.to_path_buf(), id, origin })
    }

    fn db(&self) -> &DB {
        self.db.as_ref().expect("the database is open until the backend is dropped")
    }

    fn cf(&self, t: TableId) -> StateResult<&rocksdb::ColumnFamily> {
        let name = &self.descriptors.get(t).ok_or_else(|| StateError::new(format!("no state table {t}")))?.name;
        self.db().cf_handle(name).ok_or_else(|| StateError::new(format!("RocksDB has no column family `{name}`")))
    }

    /// Bytes of live data files on disk (SST), as RocksDB estimates them.
    pub fn disk_size(&self) -> u64 {
        self.db().property_int_value("rocksdb.live-sst-files-size").ok().flatten().unwrap_or(0)
    }
}

impl Drop for RocksDbBackend {
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            // The state is thrown away: stop compactions rather than finish them.
            db.cancel_all_background_work(true);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl StateBackend for RocksDbBackend {
    fn descriptors(&self) -> &[StateDescriptor] {
        &self.descriptors
    }

    fn get(&self, table: TableId, key: &[u8]) -> StateResult<Option<Vec<u8>>> {
        let cf = self.cf(table)?;
        Ok(self.db().get_pinned_cf(cf, key).map_err(rocks_error)?.map(|v| v.to_vec()))
    }

    fn put(&mut self, table: TableId, key: &[u8], value: &[u8]) -> StateResult<()> {
        let cf = self.cf(table)?;
        self.db().put_cf_opt(cf, key, value, &self.write).map_err(rocks_error)
    }

    fn delete(&mut self, table: TableId, key: &[u8]) -> StateResult<()> {
        let cf = self.cf(table)?;
        self.db().delete_cf_opt(cf, key, &self.write).map_err(rocks_error)
    }

    fn native_snapshot(&mut self, checkpoint: u64) -> StateResult<Option<NativeSnapshot>> {
        let mut dir = self.dir.clone().into_os_string();
        dir.push(format!(".chk-{checkpoint}"));
        let dir = PathBuf::from(dir);
        // A folder left by an abandoned attempt at the same checkpoint.
        let _ = std::fs::remove_dir_all(&dir);
        let failed = |e: String| StateError::new(format!("cannot take a RocksDB checkpoint in {}: {e}", dir.display()));
        // With the write-ahead log off, the flush this makes is what puts every write in it.
        rocksdb::checkpoint::Checkpoint::new(self.db())
            .and_then(|c| c.create_checkpoint(&dir))
            .map_err(|e| failed(e.to_string()))?;
        let mut snap = NativeSnapshot { dir: dir.clone(), files: Vec::new() };
        for entry in std::fs::read_dir(&dir).map_err(|e| failed(e.to_string()))? {
            let name = entry.map_err(|e| failed(e.to_string()))?.file_name().to_string_lossy().into_owned();
            let key = name
                .ends_with(".sst")
                .then(|| self.origin.get(&name).cloned().unwrap_or_else(|| format!("{}-{name}", self.id)));
            snap.files.push(NativeFile { name, key });
        }
        snap.files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(snap))
    }

    fn range<'a>(&'a self, table: TableId, start: &[u8], end: Option<&[u8]>) -> StateResult<Entries<'a>> {
        let cf = self.cf(table)?;
        let end = end.map(<[u8]>::to_vec);
        // Bounds let RocksDB stop at `end` instead of walking deleted entries past it.
        let mut read = ReadOptions::default();
        read.set_iterate_lower_bound(start.to_vec());
        if let Some(end) = &end {
            read.set_iterate_upper_bound(end.clone());
        }
        let iter = self.db().iterator_cf_opt(cf, read, IteratorMode::From(start, Direction::Forward));
        Ok(Box::new(iter.map(|r| r.map(|(k, v)| (k.into_vec(), v.into_vec())).map_err(rocks_error)).take_while(
            move |r| match (r, &end) {
                (Ok((k, _)), Some(end)) => k.as_slice() < end.as_slice(),
                _ => true,
            },
        )))
    }
}
