//! Reading files: each subtask reads its share of the matching files, streaming, a chunk of
//! lines (CSV, JSON lines) or a row group batch (Parquet) at a time, so a file of any size
//! runs in bounded memory. A chunk that does not decode is decoded again line by line to
//! find the bad records, which fail the job, are skipped, or become dead letters.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, StringArray, UInt32Array};
use arrow::compute::{cast, concat_batches, take_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use super::{FileFormat, FileSource, OnError};
use crate::runtime::{BuildContext, OperatorError, OperatorMetrics, SourceEvent, SourceReader, dead_letter_schema};
use crate::spec::check::StreamSchema;

const CHUNK_LINES: usize = 8192;
const CHUNK_BYTES: usize = 8 << 20;

/// Whether `path` uses glob syntax.
fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// The files `path` names now, sorted: a file, the files of a folder, or a glob's matches.
/// Messages show `shown`, the path as the spec writes it, so resolved secrets stay unprinted.
pub fn list_files(path: &str, shown: &str) -> Result<Vec<PathBuf>, OperatorError> {
    if path.starts_with("s3://") {
        return Err(OperatorError::new(format!(
            "reading `{shown}`: s3:// sources are not supported by `sluice run` yet; use a local path"
        )));
    }
    let visible =
        |p: &Path| p.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with(['.', '_']));
    let mut files: Vec<PathBuf> = if is_glob(path) {
        glob::glob(path)
            .map_err(|e| OperatorError::new(format!("`{shown}` is not a valid glob: {e}")))?
            .filter_map(Result::ok)
            .filter(|p| visible(p))
            .collect()
    } else {
        let p = Path::new(path);
        if p.is_dir() {
            std::fs::read_dir(p)
                .map_err(|e| OperatorError::new(format!("cannot list `{shown}`: {e}")))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| visible(p))
                .collect()
        } else if p.is_file() {
            vec![p.to_path_buf()]
        } else {
            Vec::new()
        }
    };
    files.sort();
    Ok(files)
}

enum Open {
    Lines { reader: BufReader<File>, path: PathBuf, line: u64 },
    Parquet { reader: ParquetRecordBatchReader, path: PathBuf },
}

/// One file-source subtask.
pub struct FileReader {
    name: String,
    path: String,
    shown: String,
    format: FileFormat,
    header: bool,
    delimiter: u8,
    schema: SchemaRef,
    on_error: OnError,
    event_time: Option<usize>,
    files: VecDeque<PathBuf>,
    open: Option<Open>,
    watch: bool,
    seen: HashSet<PathBuf>,
    last_scan: Instant,
    subtask: usize,
    parallelism: usize,
    dead_letters: VecDeque<RecordBatch>,
    metrics: Arc<OperatorMetrics>,
}

impl FileReader {
    /// The reader of subtask `ctx.subtask`, for the files dealt to it.
    pub fn new(cfg: &FileSource, ctx: &BuildContext, schema: &StreamSchema) -> Result<Self, OperatorError> {
        let path = cfg.path.resolve().map_err(OperatorError::new)?;
        let mine: VecDeque<PathBuf> = ctx.splits.iter().map(PathBuf::from).collect();
        let total: u64 = mine.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
        if !cfg.watch {
            OperatorMetrics::add(&ctx.metrics.bytes_total, total);
        }
        let csv = cfg.csv.as_ref();
        Ok(FileReader {
            name: ctx.operator.clone(),
            path,
            shown: cfg.path.0.clone(),
            format: cfg.format,
            header: csv.is_none_or(|c| c.header),
            delimiter: csv.and_then(|c| c.delimiter.as_ref()).and_then(|d| d.bytes().next()).unwrap_or(b','),
            schema: schema.schema.clone(),
            on_error: cfg.on_error,
            event_time: schema.event_time.as_ref().and_then(|c| schema.schema.index_of(c).ok()),
            seen: ctx.all_splits.iter().map(PathBuf::from).collect(),
            files: mine,
            open: None,
            watch: cfg.watch,
            last_scan: Instant::now(),
            subtask: ctx.subtask,
            parallelism: ctx.parallelism,
            dead_letters: VecDeque::new(),
            metrics: ctx.metrics.clone(),
        })
    }

    /// Picks up files that appeared since the last look; each goes to one subtask, chosen by
    /// a hash of its name that every subtask computes alike.
    fn rescan(&mut self) -> Result<(), OperatorError> {
        self.last_scan = Instant::now();
        for f in list_files(&self.path, &self.shown)? {
            if self.seen.insert(f.clone()) {
                let owner =
                    f.to_string_lossy().bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
                if owner as usize % self.parallelism == self.subtask {
                    self.files.push_back(f);
                }
            }
        }
        Ok(())
    }

    fn open_next(&mut self) -> Result<bool, OperatorError> {
        let Some(path) = self.files.pop_front() else { return Ok(false) };
        let file =
            File::open(&path).map_err(|e| OperatorError::new(format!("cannot open `{}`: {e}", path.display())))?;
        self.open = Some(match self.format {
            FileFormat::Parquet => {
                let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                    .and_then(|b| b.with_batch_size(CHUNK_LINES).build())
                    .map_err(|e| OperatorError::new(format!("cannot read Parquet file `{}`: {e}", path.display())))?;
                OperatorMetrics::add(&self.metrics.bytes_read, std::fs::metadata(&path).map_or(0, |m| m.len()));
                Open::Parquet { reader, path }
            }
            _ => {
                let mut reader = BufReader::with_capacity(1 << 20, file);
                let mut line = 0;
                if self.format == FileFormat::Csv && self.header {
                    let mut skip = String::new();
                    let n = reader.read_line(&mut skip)?;
                    OperatorMetrics::add(&self.metrics.bytes_read, n as u64);
                    line = 1;
                }
                Open::Lines { reader, path, line }
            }
        });
        Ok(true)
    }

    fn decode(&self, bytes: &[u8]) -> Result<Option<RecordBatch>, arrow::error::ArrowError> {
        // Both decoders take bytes until their batch is full (then they take none until
        // flushed) or the input is used up; every byte is decoded.
        let mut batches = Vec::new();
        match self.format {
            FileFormat::Csv => {
                let mut d = arrow::csv::ReaderBuilder::new(self.schema.clone())
                    .with_header(false)
                    .with_delimiter(self.delimiter)
                    .with_batch_size(CHUNK_LINES)
                    .build_decoder();
                let mut rest = bytes;
                while !rest.is_empty() {
                    let n = d.decode(rest)?;
                    rest = &rest[n..];
                    if d.capacity() == 0 {
                        batches.extend(d.flush()?);
                    } else if n == 0 {
                        break;
                    }
                }
                batches.extend(d.flush()?);
            }
            _ => {
                let mut d = arrow::json::ReaderBuilder::new(self.schema.clone())
                    .with_batch_size(CHUNK_LINES)
                    .build_decoder()?;
                let mut rest = bytes;
                while !rest.is_empty() {
                    let n = d.decode(rest)?;
                    rest = &rest[n..];
                    if n == 0 {
                        // Full: flush, or stop if flushing frees nothing (input it cannot take).
                        match d.flush()? {
                            Some(b) => batches.push(b),
                            None => break,
                        }
                    }
                }
                batches.extend(d.flush()?);
            }
        }
        match batches.len() {
            0 => Ok(None),
            1 => Ok(batches.pop()),
            _ => Ok(Some(concat_batches(&self.schema, &batches)?)),
        }
    }

    /// Handles records that could not be read: fail, skip or dead-letter them.
    fn bad(&mut self, bad: Vec<(String, String, String)>) -> Result<(), OperatorError> {
        if bad.is_empty() {
            return Ok(());
        }
        match self.on_error {
            OnError::Fail => {
                let (raw, error, location) = bad.into_iter().next().expect("not empty");
                Err(OperatorError::with_record(format!("{location}: {error}"), raw))
            }
            OnError::Skip => {
                OperatorMetrics::add(&self.metrics.bad_records, bad.len() as u64);
                Ok(())
            }
            OnError::DeadLetter => {
                OperatorMetrics::add(&self.metrics.bad_records, bad.len() as u64);
                let n = bad.len();
                let source: ArrayRef = Arc::new(StringArray::from(vec![self.name.as_str(); n]));
                let raw: ArrayRef = Arc::new(StringArray::from_iter_values(bad.iter().map(|b| b.0.as_str())));
                let error: ArrayRef = Arc::new(StringArray::from_iter_values(bad.iter().map(|b| b.1.as_str())));
                let location: ArrayRef = Arc::new(StringArray::from_iter_values(bad.iter().map(|b| b.2.as_str())));
                self.dead_letters
                    .push_back(RecordBatch::try_new(dead_letter_schema(), vec![source, raw, error, location])?);
                Ok(())
            }
        }
    }

    /// Reads the next chunk of lines of the open file; `None` at its end.
    fn read_lines(&mut self) -> Result<Option<RecordBatch>, OperatorError> {
        let Some(Open::Lines { reader, path, line }) = &mut self.open else { return Ok(None) };
        let mut buf = Vec::with_capacity(1 << 16);
        let mut starts = Vec::new();
        let first_line = *line + 1;
        while starts.len() < CHUNK_LINES && buf.len() < CHUNK_BYTES {
            let before = buf.len();
            let n = reader.read_until(b'\n', &mut buf)?;
            if n == 0 {
                break;
            }
            *line += 1;
            if buf[before..].iter().all(u8::is_ascii_whitespace) {
                buf.truncate(before);
                continue;
            }
            if buf.last() != Some(&b'\n') {
                buf.push(b'\n');
            }
            starts.push((before, *line));
        }
        OperatorMetrics::add(&self.metrics.bytes_read, buf.len() as u64);
        if starts.is_empty() {
            return Ok(None);
        }
        let path = path.display().to_string();
        let _ = first_line;
        // The fast path needs one record per line; anything else is sorted out line by line.
        match self.decode(&buf).map(|b| b.unwrap_or_else(|| RecordBatch::new_empty(self.schema.clone()))) {
            Ok(batch) if batch.num_rows() == starts.len() => {
                if let Some(nulls) = self.null_event_times(&batch) {
                    let lines: Vec<(usize, u64)> = starts.clone();
                    return self.split_out(batch, &nulls, &buf, &lines, &path).map(Some);
                }
                Ok(Some(batch))
            }
            _ => {
                // Find the bad records one by one.
                let mut good = Vec::new();
                let mut bad = Vec::new();
                for (i, &(start, line_no)) in starts.iter().enumerate() {
                    let end = starts.get(i + 1).map_or(buf.len(), |s| s.0);
                    let record = &buf[start..end];
                    let raw = String::from_utf8_lossy(record).trim_end().to_string();
                    match self.decode(record) {
                        Ok(Some(b)) if b.num_rows() == 1 => {
                            if self.null_event_times(&b).is_some() {
                                bad.push((raw, self.null_event_time_error(), format!("{path}:{line_no}")));
                            } else {
                                good.push(b);
                            }
                        }
                        Ok(b) => {
                            let n = b.map_or(0, |b| b.num_rows());
                            let why = format!("expected one record on the line, found {n}");
                            bad.push((raw, why, format!("{path}:{line_no}")))
                        }
                        Err(e) => bad.push((raw, e.to_string(), format!("{path}:{line_no}"))),
                    }
                }
                self.bad(bad)?;
                Ok(Some(concat_batches(&self.schema, &good)?))
            }
        }
    }

    fn null_event_time_error(&self) -> String {
        let col = self.event_time.map(|c| self.schema.field(c).name().clone()).unwrap_or_default();
        format!("event-time column `{col}` is empty")
    }

    /// Row indices whose event time is null, if any.
    fn null_event_times(&self, batch: &RecordBatch) -> Option<Vec<usize>> {
        let col = batch.column(self.event_time?);
        (col.null_count() > 0).then(|| (0..col.len()).filter(|&i| col.is_null(i)).collect())
    }

    fn split_out(
        &mut self,
        batch: RecordBatch,
        nulls: &[usize],
        buf: &[u8],
        lines: &[(usize, u64)],
        path: &str,
    ) -> Result<RecordBatch, OperatorError> {
        let bad = nulls
            .iter()
            .map(|&i| {
                let (start, line_no) = lines[i];
                let end = lines.get(i + 1).map_or(buf.len(), |s| s.0);
                let raw = String::from_utf8_lossy(&buf[start..end]).trim_end().to_string();
                (raw, self.null_event_time_error(), format!("{path}:{line_no}"))
            })
            .collect();
        self.bad(bad)?;
        let keep: Vec<u32> = (0..batch.num_rows() as u32).filter(|i| !nulls.contains(&(*i as usize))).collect();
        Ok(take_record_batch(&batch, &UInt32Array::from(keep))?)
    }

    /// The declared columns of a Parquet batch, cast to the declared types.
    fn conform(&self, batch: RecordBatch, path: &Path) -> Result<RecordBatch, OperatorError> {
        let columns = self
            .schema
            .fields()
            .iter()
            .map(|f| {
                let col = batch.column_by_name(f.name()).ok_or_else(|| {
                    OperatorError::new(format!("Parquet file `{}` has no column `{}`", path.display(), f.name()))
                })?;
                if col.data_type() == f.data_type() {
                    Ok(col.clone())
                } else {
                    cast(col, f.data_type())
                        .map_err(|e| OperatorError::new(format!("`{}` column `{}`: {e}", path.display(), f.name())))
                }
            })
            .collect::<Result<Vec<_>, OperatorError>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

impl SourceReader for FileReader {
    fn next(&mut self) -> Result<SourceEvent, OperatorError> {
        loop {
            if let Some(d) = self.dead_letters.pop_front() {
                return Ok(SourceEvent::DeadLetters(d));
            }
            if self.open.is_none() && !self.open_next()? {
                if !self.watch {
                    return Ok(SourceEvent::End);
                }
                if self.last_scan.elapsed() >= Duration::from_secs(1) {
                    self.rescan()?;
                }
                if self.files.is_empty() {
                    std::thread::sleep(Duration::from_millis(100));
                    return Ok(SourceEvent::Pending);
                }
                continue;
            }
            let batch = match &mut self.open {
                Some(Open::Parquet { reader, path }) => match reader.next() {
                    Some(Ok(b)) => {
                        let path = path.clone();
                        Some(self.conform(b, &path)?)
                    }
                    Some(Err(e)) => {
                        return Err(OperatorError::new(format!("reading `{}`: {e}", path.display())));
                    }
                    None => None,
                },
                Some(Open::Lines { .. }) => self.read_lines()?,
                None => None,
            };
            match batch {
                Some(b) if b.num_rows() > 0 => return Ok(SourceEvent::Batch(b)),
                Some(_) => continue,
                None => self.open = None,
            }
        }
    }
}
