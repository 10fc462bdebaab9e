//! Writing files: each subtask writes its own part files into the folder (or into event-time
//! buckets under it), rolling to a new file by size and by time. A file is written under a
//! hidden `.inprogress` name and renamed to its final name only when complete, so readers of
//! the folder never see half a file. (Committing with checkpoints comes with them.)
//!
//! File names are unique per sink, run and subtask (`part-<time>-<run id>-<sink>-<subtask>-<n>`,
//! the run id random per process), and every file is created exclusively, so two sinks on
//! one folder, or two runs started at once, can never share a file: a name that exists
//! already is skipped. A subtask that stops without finishing (a failed run) removes its
//! in-progress files.

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
use crate::runtime::{BuildContext, Operator, OperatorError, Output};
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

    /// Finishes the file and gives it its final name; a file that cannot be finished is removed.
    fn close(self) -> Result<(), OperatorError> {
        let tmp = self.tmp.clone();
        let result = self.finish();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn finish(self) -> Result<(), OperatorError> {
        match self.writer {
            Writer::Csv(w) => w.into_inner().flush()?,
            Writer::Json(mut w) => {
                w.finish()?;
                w.into_inner().flush()?;
            }
            Writer::Parquet(w) => {
                w.close().map_err(|e| OperatorError::new(e.to_string()))?;
            }
        }
        std::fs::rename(&self.tmp, &self.path)
            .map_err(|e| OperatorError::new(format!("cannot finish `{}`: {e}", self.path.display())))
    }
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
}

impl FileWriter {
    /// The writer of subtask `ctx.subtask`.
    pub fn new(cfg: &FileSink, ctx: &BuildContext, input: &StreamSchema) -> Result<Self, OperatorError> {
        let dir = cfg.path.resolve().map_err(OperatorError::new)?;
        if dir.starts_with("s3://") {
            return Err(OperatorError::new(format!(
                "sink `{}`: writing to s3:// is not supported by `sluice run` yet; use a local path",
                ctx.operator
            )));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| OperatorError::io(format_args!("cannot create folder `{}`", cfg.path.0), e))?;
        let time = chrono::Utc::now().format("%Y%m%dT%H%M%S%3f");
        Ok(FileWriter {
            dir: PathBuf::from(dir),
            format: cfg.format,
            bucket: cfg.bucket.clone(),
            event_time: input.event_time.as_ref().and_then(|c| input.schema.index_of(c).ok()),
            max_size: cfg.rolling.as_ref().and_then(|r| r.max_size).map(|s| s.0),
            interval: cfg.rolling.as_ref().and_then(|r| r.interval).map(|d| d.0),
            schema: input.schema.clone(),
            prefix: format!("part-{time}-{}-{}-{}", run_id(), ctx.operator, ctx.subtask),
            seq: 0,
            open: HashMap::new(),
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
            self.open
                .insert(bucket.to_string(), OpenFile { writer, tmp, path, opened: Instant::now(), bytes, rows: 0 });
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
                f.close()?;
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
    /// Files still open were not finished (the run failed or was cut short): remove them.
    fn drop(&mut self) {
        for (_, f) in self.open.drain() {
            drop(f.writer);
            let _ = std::fs::remove_file(&f.tmp);
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
        self.roll(true)
    }
}
