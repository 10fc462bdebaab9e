//! Writing files: each subtask writes its own part files into the folder (or into event-time
//! buckets under it), rolling to a new file by size and by time. A file is written under a
//! hidden `.inprogress` name and renamed to its final name only when complete, so readers of
//! the folder never see half a file.
//!
//! Without checkpoints, a file is renamed when it closes. File names are unique per sink, run
//! and subtask (`part-<time>-<run id>-<sink>-<subtask>-<n>`, the run id random per process).
//!
//! With checkpoints, output is exactly once (two-phase commit): names are deterministic,
//! `part-<sink>-<subtask>-<generation>-<n>`; at a barrier every open file is flushed, synced
//! and closed, and recorded as pending for that checkpoint (pre-commit); only the checkpoint's
//! completion renames it to its final name and syncs the folder (commit). A commit is
//! idempotent (a file already renamed is done). Before a job starts, [`recover`] re-drives the
//! commits of the checkpoint it restores and deletes this sink's in-progress files that the
//! checkpoint does not reference.
//!
//! Every file is created exclusively, so two sinks on one folder can never share a file: a
//! name that exists already is skipped. A subtask that stops without finishing (a failed run)
//! removes the files it still has open.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, TimestampMillisecondArray, UInt32Array};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;

use super::{FileFormat, FileSink};
use crate::checkpoint::S3Options;
use crate::runtime::{BuildContext, Operator, OperatorError, OperatorSnapshot, Output};
use crate::spec::check::StreamSchema;

/// Counts bytes written through it.
struct Counting<W> {
    inner: W,
    count: Arc<AtomicU64>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

enum Writer {
    Csv(Box<arrow::csv::Writer<Counting<BufWriter<File>>>>),
    Json(arrow::json::LineDelimitedWriter<Counting<BufWriter<File>>>),
    Parquet(Box<ArrowWriter<File>>),
}

struct OpenFile {
    writer: Writer,
    tmp: PathBuf,
    path: PathBuf,
    opened: Instant,
    bytes: Arc<AtomicU64>,
    rows: u64,
    /// For an `s3://` sink: the object it becomes (the file is a local staging copy).
    url: Option<String>,
}

impl OpenFile {
    fn size(&self) -> u64 {
        match &self.writer {
            Writer::Parquet(w) => (w.bytes_written() + w.in_progress_size()) as u64,
            _ => self.bytes.load(Ordering::Relaxed),
        }
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), OperatorError> {
        self.rows += batch.num_rows() as u64;
        match &mut self.writer {
            Writer::Csv(w) => w.write(batch)?,
            Writer::Json(w) => w.write(batch)?,
            Writer::Parquet(w) => w.write(batch).map_err(|e| OperatorError::new(e.to_string()))?,
        }
        Ok(())
    }

    /// Finishes the file: gives it its final name, or with `durable` syncs it to disk and
    /// leaves the renaming to a commit. A file that cannot be finished is removed.
    fn close(self, durable: bool, s3: Option<&S3Options>) -> Result<Pending, OperatorError> {
        let tmp = self.tmp.clone();
        let result = self.finish(durable, s3);
        if result.is_err() || matches!(result, Ok(Pending::Remote { .. })) {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn finish(self, durable: bool, s3: Option<&S3Options>) -> Result<Pending, OperatorError> {
        let failed =
            |e: &dyn std::fmt::Display| OperatorError::new(format!("cannot finish `{}`: {e}", self.tmp.display()));
        match self.writer {
            Writer::Csv(w) => drop(w.into_inner().inner.into_inner().map_err(|e| failed(&e))?),
            Writer::Json(mut w) => {
                w.finish()?;
                drop(w.into_inner().inner.into_inner().map_err(|e| failed(&e))?);
            }
            Writer::Parquet(w) => {
                w.close().map_err(|e| failed(&e))?;
            }
        }
        if let Some(url) = &self.url {
            // Uploaded now; visible when the upload completes (at once without checkpoints).
            let (upload, parts) = super::remote::stage(url, &self.tmp, s3)?;
            let pending = Pending::Remote { url: url.clone(), upload, parts };
            if !durable {
                commit(&pending, s3)?;
            }
            return Ok(pending);
        }
        let pending = Pending::Local { tmp: self.tmp.clone(), path: self.path.clone() };
        if durable {
            File::open(&self.tmp).and_then(|f| f.sync_all()).map_err(|e| failed(&e))?;
            return Ok(pending);
        }
        std::fs::rename(&self.tmp, &self.path)
            .map_err(|e| OperatorError::io(format_args!("cannot finish `{}`", self.path.display()), e))?;
        Ok(pending)
    }
}

/// A finished file waiting for its commit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Pending {
    /// A local file: its in-progress name and its final name.
    Local {
        /// The in-progress file.
        tmp: PathBuf,
        /// Its final name.
        path: PathBuf,
    },
    /// An object uploaded in parts, visible once the upload is completed.
    Remote {
        /// `s3://bucket/key`.
        url: String,
        /// The multipart upload's id.
        upload: String,
        /// Its parts' ids, in order.
        parts: Vec<String>,
    },
}

/// Makes a pending file visible: renames it and syncs its folder, or completes its upload.
/// Idempotent: a file already renamed (an upload already completed) is done.
pub fn commit(p: &Pending, s3: Option<&S3Options>) -> Result<(), OperatorError> {
    let (tmp, path) = match p {
        Pending::Local { tmp, path } => (tmp, path),
        Pending::Remote { url, upload, parts } => return super::remote::complete(url, upload, parts, s3),
    };
    match std::fs::rename(tmp, path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && path.exists() => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(OperatorError::new(format!(
                "cannot commit `{}`: neither it nor its in-progress file `{}` exists; was the output folder \
                 removed after the checkpoint? (`sluice run --fresh` starts over)",
                path.display(),
                tmp.display()
            )));
        }
        Err(e) => return Err(OperatorError::io(format_args!("cannot commit `{}`", path.display()), e)),
    }
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| OperatorError::io(format_args!("cannot sync folder `{}`", dir.display()), e))?;
    }
    Ok(())
}

/// What a sink subtask keeps in a checkpoint: the files it pre-committed and not yet committed.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct SinkState {
    pending: Vec<Pending>,
}

/// Whether `file` is an in-progress file of sink `sink` written with checkpoints:
/// `.part-<sink>-<subtask>-<generation>-<n>.<ext>.inprogress`.
fn is_own_in_progress(file: &str, sink: &str) -> bool {
    let Some(rest) = file.strip_prefix(".part-").and_then(|f| f.strip_suffix(".inprogress")) else { return false };
    let Some((stem, _ext)) = rest.rsplit_once('.') else { return false };
    let parts: Vec<&str> = stem.rsplitn(4, '-').collect();
    parts.len() == 4
        && parts[..3].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && parts[3] == sink
}

/// Before a checkpointed job starts: commits the files `restored` lists as pending, then
/// deletes sink `name`'s other in-progress files under `dir` (written after that checkpoint).
pub fn recover(
    dir: &std::path::Path,
    name: &str,
    restored: &[&serde_json::Value],
    s3: Option<&S3Options>,
) -> Result<(), OperatorError> {
    for meta in restored {
        let state: SinkState = serde_json::from_value((*meta).clone()).map_err(|e| {
            OperatorError::new(format!("sink `{name}`: the checkpoint's sink state is unreadable: {e}"))
        })?;
        for p in &state.pending {
            if let Pending::Local { tmp, .. } = p
                && !tmp.file_name().and_then(|f| f.to_str()).is_some_and(|f| is_own_in_progress(f, name))
            {
                return Err(OperatorError::new(format!(
                    "sink `{name}`: the checkpoint lists `{}`, which is not one of its in-progress files",
                    tmp.display()
                )));
            }
            commit(p, s3)?;
        }
    }
    // Uploads a checkpoint does not reference stay incomplete, so invisible (a bucket's
    // lifecycle rule removes them); local in-progress files are removed here.
    if dir.to_str().is_some_and(|d| d.starts_with("s3://")) {
        return Ok(());
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                stack.push(path);
            } else if e.file_name().to_str().is_some_and(|f| is_own_in_progress(f, name)) {
                std::fs::remove_file(&path)
                    .map_err(|err| OperatorError::io(format_args!("cannot remove `{}`", path.display()), err))?;
            }
        }
    }
    Ok(())
}

/// One file-sink subtask.
pub struct FileWriter {
    dir: PathBuf,
    format: FileFormat,
    bucket: Option<String>,
    event_time: Option<usize>,
    max_size: Option<u64>,
    interval: Option<Duration>,
    schema: SchemaRef,
    prefix: String,
    seq: u64,
    open: HashMap<String, OpenFile>,
    /// With checkpoints: files commit only when a checkpoint completes.
    checkpointing: bool,
    /// Files closed since the last barrier (with checkpoints).
    closed: Vec<Pending>,
    /// Files pre-committed per checkpoint, waiting for its completion.
    pending: std::collections::BTreeMap<u64, Vec<Pending>>,
    /// For an `s3://` sink: the folder's URL (files are staged in `dir`, a local folder).
    remote: Option<String>,
    /// S3 settings.
    s3: Option<S3Options>,
    /// The lock of an `s3://` sink's staging folder.
    _staging_lock: Option<crate::checkpoint::FolderLock>,
}

impl FileWriter {
    /// The writer of subtask `ctx.subtask`.
    pub fn new(cfg: &FileSink, ctx: &BuildContext, input: &StreamSchema) -> Result<Self, OperatorError> {
        let resolved = cfg.path.resolve().map_err(OperatorError::new)?;
        // An s3:// sink writes each file in a local staging folder of its own, then uploads it.
        let (dir, remote) = match resolved.strip_prefix("s3://") {
            Some(_) => {
                // Staged files of killed runs: what they uploaded is in the storage already.
                crate::checkpoint::remove_abandoned(&std::env::temp_dir(), "sluice-staging-");
                let staging = std::env::temp_dir().join(format!(
                    "sluice-staging-{}-{}-{}-{}",
                    std::process::id(),
                    ctx.operator,
                    ctx.subtask,
                    run_id()
                ));
                super::remote::probe(&resolved, cfg.s3.as_deref())?;
                (staging.display().to_string(), Some(resolved.trim_end_matches('/').to_string()))
            }
            None => (resolved, None),
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| OperatorError::io(format_args!("cannot create folder `{}`", cfg.path.0), e))?;
        // A staging folder is locked while in use: a later run removes it only once abandoned.
        let staging_lock = match remote {
            Some(_) => Some(
                crate::checkpoint::FolderLock::take(std::path::Path::new(&dir))
                    .map_err(|e| OperatorError::io(format_args!("cannot lock staging folder `{dir}`"), e))?,
            ),
            None => None,
        };
        let time = chrono::Utc::now().format("%Y%m%dT%H%M%S%3f");
        let prefix = match ctx.checkpointing {
            true => format!("part-{}-{}-{}", ctx.operator, ctx.subtask, ctx.generation),
            false => format!("part-{time}-{}-{}-{}", run_id(), ctx.operator, ctx.subtask),
        };
        Ok(FileWriter {
            dir: PathBuf::from(dir),
            format: cfg.format,
            bucket: cfg.bucket.clone(),
            event_time: input.event_time.as_ref().and_then(|c| input.schema.index_of(c).ok()),
            max_size: cfg.rolling.as_ref().and_then(|r| r.max_size).map(|s| s.0),
            interval: cfg.rolling.as_ref().and_then(|r| r.interval).map(|d| d.0),
            schema: input.schema.clone(),
            prefix,
            seq: 0,
            open: HashMap::new(),
            checkpointing: ctx.checkpointing,
            closed: Vec::new(),
            pending: Default::default(),
            remote,
            s3: cfg.s3.as_deref().cloned(),
            _staging_lock: staging_lock,
        })
    }

    fn file_for(&mut self, bucket: &str) -> Result<&mut OpenFile, OperatorError> {
        if !self.open.contains_key(bucket) {
            if !super::stays_inside(bucket) {
                return Err(OperatorError::new(format!("bucket folder `{bucket}` would be outside the sink's folder")));
            }
            let dir = if bucket.is_empty() { self.dir.clone() } else { self.dir.join(bucket) };
            std::fs::create_dir_all(&dir)
                .map_err(|e| OperatorError::io(format_args!("cannot create folder `{}`", dir.display()), e))?;
            let ext = self.format.name();
            // Skip names taken, whether finished or in progress.
            let (file, tmp, path) = loop {
                let name = format!("{}-{:05}.{ext}", self.prefix, self.seq);
                self.seq += 1;
                let path = dir.join(&name);
                let tmp = dir.join(format!(".{name}.inprogress"));
                if path.exists() {
                    continue;
                }
                match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                    Ok(file) => break (file, tmp, path),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(OperatorError::io(format_args!("cannot create `{}`", tmp.display()), e)),
                }
            };
            let bytes = Arc::new(AtomicU64::new(0));
            let counting = |file| Counting { inner: BufWriter::with_capacity(1 << 20, file), count: bytes.clone() };
            let writer = match self.format {
                FileFormat::Csv => {
                    Writer::Csv(Box::new(arrow::csv::WriterBuilder::new().with_header(true).build(counting(file))))
                }
                FileFormat::Jsonl => Writer::Json(arrow::json::LineDelimitedWriter::new(counting(file))),
                FileFormat::Parquet => Writer::Parquet(Box::new(
                    ArrowWriter::try_new(file, self.schema.clone(), None)
                        .map_err(|e| OperatorError::new(e.to_string()))?,
                )),
            };
            let url = self.remote.as_ref().map(|r| {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                if bucket.is_empty() { format!("{r}/{name}") } else { format!("{r}/{bucket}/{name}") }
            });
            self.open.insert(
                bucket.to_string(),
                OpenFile { writer, tmp, path, opened: Instant::now(), bytes, rows: 0, url },
            );
        }
        Ok(self.open.get_mut(bucket).expect("just opened"))
    }

    /// Closes files that reached their size or age.
    fn roll(&mut self, force: bool) -> Result<(), OperatorError> {
        let due: Vec<String> = self
            .open
            .iter()
            .filter(|(_, f)| {
                force
                    || self.max_size.is_some_and(|m| f.size() >= m)
                    || self.interval.is_some_and(|i| f.opened.elapsed() >= i)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            if let Some(f) = self.open.remove(&k) {
                let done = f.close(self.checkpointing, self.s3.as_ref())?;
                if self.checkpointing {
                    self.closed.push(done);
                }
            }
        }
        Ok(())
    }

    /// Rows of `batch` per bucket folder.
    fn buckets(&self, batch: &RecordBatch) -> Result<Vec<(String, RecordBatch)>, OperatorError> {
        let (Some(pattern), Some(col)) = (&self.bucket, self.event_time) else {
            return Ok(vec![(String::new(), batch.clone())]);
        };
        let ts = cast(batch.column(col), &DataType::Timestamp(TimeUnit::Millisecond, None))?;
        let ts = ts.as_any().downcast_ref::<TimestampMillisecondArray>().expect("cast to ms");
        let mut rows: Vec<(String, Vec<u32>)> = Vec::new();
        for i in 0..batch.num_rows() {
            let name = if ts.is_null(i) {
                "unknown".to_string()
            } else {
                chrono::DateTime::from_timestamp_millis(ts.value(i))
                    .map_or_else(|| "unknown".into(), |t| t.format(pattern).to_string())
            };
            match rows.iter_mut().find(|(b, _)| *b == name) {
                Some((_, v)) => v.push(i as u32),
                None => rows.push((name, vec![i as u32])),
            }
        }
        if rows.len() == 1 {
            return Ok(vec![(rows.remove(0).0, batch.clone())]);
        }
        rows.into_iter().map(|(b, idx)| Ok((b, take_record_batch(batch, &UInt32Array::from(idx))?))).collect()
    }
}

/// A random id for this process's run, the same for every sink subtask.
fn run_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        // `RandomState` is seeded from the OS; mix in time and process id for good measure.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        h.write_u32(std::process::id());
        format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
    })
}

impl Drop for FileWriter {
    /// Files still open were not finished (the run failed or was cut short): remove them,
    /// and an `s3://` sink's staging folder with them.
    fn drop(&mut self) {
        for (_, f) in self.open.drain() {
            drop(f.writer);
            let _ = std::fs::remove_file(&f.tmp);
        }
        if self.remote.is_some() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Operator for FileWriter {
    fn process(&mut self, _: usize, batch: RecordBatch, _: &mut dyn Output) -> Result<(), OperatorError> {
        if self.format != FileFormat::Parquet {
            super::values::check_printable(&batch)?;
        }
        for (bucket, mut part) in self.buckets(&batch)? {
            // With a size limit, write as many rows as fit (by the size of rows written so
            // far), roll, and go on with the rest.
            while part.num_rows() > 0 {
                let max = self.max_size;
                let file = self.file_for(&bucket)?;
                let n = match max {
                    Some(max) if file.rows > 0 => {
                        let per_row = (file.size() / file.rows).max(1);
                        (max.saturating_sub(file.size()) / per_row).clamp(1, part.num_rows() as u64) as usize
                    }
                    Some(_) => part.num_rows().min(1024),
                    None => part.num_rows(),
                };
                file.write(&part.slice(0, n))?;
                part = part.slice(n, part.num_rows() - n);
                self.roll(false)?;
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, _: i64, _: &mut dyn Output) -> Result<(), OperatorError> {
        self.roll(false)
    }

    fn on_tick(&mut self, _: &mut dyn Output) -> Result<(), OperatorError> {
        self.roll(false)
    }

    fn on_end(&mut self, _: &mut dyn Output) -> Result<(), OperatorError> {
        // With checkpoints, files closed now belong to no checkpoint and stay uncommitted.
        self.roll(true)
    }

    fn snapshot(&mut self, checkpoint: u64, _: &mut dyn Output) -> Result<OperatorSnapshot, OperatorError> {
        if !self.checkpointing {
            return Ok(OperatorSnapshot::default());
        }
        self.roll(true)?;
        let closed = std::mem::take(&mut self.closed);
        self.pending.entry(checkpoint).or_default().extend(closed);
        let state = SinkState { pending: self.pending.values().flatten().cloned().collect() };
        Ok(OperatorSnapshot { meta: serde_json::to_value(state).expect("sink state serializes"), ..Default::default() })
    }

    fn checkpoint_complete(&mut self, checkpoint: u64) -> Result<(), OperatorError> {
        let later = self.pending.split_off(&(checkpoint + 1));
        for p in std::mem::replace(&mut self.pending, later).into_values().flatten() {
            crate::checkpoint::crash_point("commit");
            crate::checkpoint::fail_point("commit")?;
            commit(&p, self.s3.as_ref())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_progress_files_are_recognised_by_their_exact_sink_name() {
        assert!(is_own_in_progress(".part-out-0-3-00012.csv.inprogress", "out"));
        assert!(is_own_in_progress(".part-a-b-1-2-00000.parquet.inprogress", "a-b"));
        assert!(!is_own_in_progress(".part-a-b-1-2-00000.parquet.inprogress", "a"), "another sink's file");
        assert!(!is_own_in_progress("part-out-0-3-00012.csv", "out"), "committed");
        assert!(!is_own_in_progress(".part-20260101T000000000-abc-out-0-00001.csv.inprogress", "out"));
    }

    #[test]
    fn a_commit_is_idempotent_and_recovery_removes_what_no_checkpoint_references() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (tmp, path) = (d.join(".part-s-0-1-00000.csv.inprogress"), d.join("part-s-0-1-00000.csv"));
        let p = Pending::Local { tmp: tmp.clone(), path: path.clone() };
        std::fs::write(&tmp, "a\n1\n").unwrap();
        std::fs::create_dir(d.join("2026")).unwrap();
        let stray = d.join("2026/.part-s-1-1-00004.csv.inprogress");
        std::fs::write(&stray, "x").unwrap();
        let other = d.join(".part-t-0-1-00000.csv.inprogress");
        std::fs::write(&other, "y").unwrap();
        let meta = serde_json::to_value(SinkState { pending: vec![p.clone()] }).unwrap();
        recover(d, "s", &[&meta], None).unwrap();
        recover(d, "s", &[&meta], None).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\n1\n");
        assert!(!tmp.exists() && !stray.exists());
        assert!(other.exists(), "another sink's file stays");
        commit(&p, None).unwrap();
        let gone =
            Pending::Local { tmp: d.join(".part-s-0-1-00009.csv.inprogress"), path: d.join("part-s-0-1-00009.csv") };
        let meta = serde_json::to_value(SinkState { pending: vec![gone] }).unwrap();
        let e = recover(d, "s", &[&meta], None).unwrap_err();
        assert!(e.message.contains("part-s-0-1-00009.csv") && e.message.contains("was the output folder"), "{e}");
        let foreign = Pending::Local { tmp: d.join("notes.txt"), path: d.join("elsewhere.txt") };
        let meta = serde_json::to_value(SinkState { pending: vec![foreign] }).unwrap();
        assert!(recover(d, "s", &[&meta], None).unwrap_err().message.contains("not one of its in-progress files"));
    }
}
