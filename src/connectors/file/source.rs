//! Reading files: each subtask reads its share of the matching files, streaming, a chunk of
//! records (CSV, JSON lines) or a row group batch (Parquet) at a time, so a file of any size
//! runs in bounded memory. Text is decoded as text columns and converted to the declared
//! types afterwards (see [`values`]), so a bad value marks one row. JSON lines are decoded
//! line by line (see [`json_lines`]); a CSV chunk that does not decode at all is halved until
//! its bad records stand alone. Bad records fail the job, are skipped, or become dead letters.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use super::json_lines;
use super::remote;
use super::row_groups::{self, RowGroups};
use super::{FileFormat, FileSource, OnError, values};
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
pub fn list_files(
    path: &str,
    shown: &str,
    s3: Option<&crate::checkpoint::S3Options>,
) -> Result<Vec<PathBuf>, OperatorError> {
    if path.starts_with("s3://") {
        return Ok(remote::list(path, s3, shown)?.into_iter().map(PathBuf::from).collect());
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

/// Files a subtask keeps open at most when it interleaves them by event time.
const MAX_OPEN: usize = 16;

/// Files each of `subtasks` subtasks may keep open at once: [`MAX_OPEN`], or fewer so that
/// all of them together hold at most a quarter of the process's open-file limit; at least 1.
fn max_open_files(subtasks: usize) -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the limit into `limit`.
    let nofile = match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } {
        0 => usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX),
        _ => 1024,
    };
    (nofile / 4 / subtasks.max(1)).clamp(1, MAX_OPEN)
}

enum Open {
    /// `offset` counts the bytes of the file consumed (records returned, and the header).
    Lines { reader: BufReader<Box<dyn Read + Send>>, line: u64, offset: u64 },
    /// `row` and `rows` count the rows of the row groups read.
    Parquet { reader: ParquetRecordBatchReader, row: u64, rows: u64, groups: RowGroups },
}

impl Open {
    /// Whether everything has been read (so the file can be closed now).
    fn at_end(&mut self) -> std::io::Result<bool> {
        Ok(match self {
            Open::Lines { reader, .. } => reader.fill_buf()?.is_empty(),
            Open::Parquet { row, rows, .. } => *row >= *rows,
        })
    }
}

/// Where a reader is in one file, as checkpoints keep it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SplitPosition {
    /// The file.
    pub path: PathBuf,
    /// Bytes consumed (CSV, JSON lines): reading resumes there, past the header.
    #[serde(default)]
    pub offset: u64,
    /// Lines consumed, for locations in messages.
    #[serde(default)]
    pub line: u64,
    /// The file's row number of the next row to read (Parquet; resumed under whatever row
    /// groups the restored job's filters skip).
    #[serde(default)]
    pub row: u64,
    /// Whether the file was read to its end.
    #[serde(default)]
    pub done: bool,
    /// The largest event time read from it, ms.
    #[serde(default = "min_time")]
    pub max_event_time: i64,
}

fn min_time() -> i64 {
    i64::MIN
}

/// What a file-source subtask keeps in a checkpoint.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct ReaderState {
    /// Files started, finished or picked up by watching (not-yet-started ones of the initial
    /// list are implied).
    files: Vec<SplitPosition>,
}

/// One file being read.
struct Split {
    open: Open,
    path: PathBuf,
    /// The largest event time read from it so far, ms.
    max_event_time: i64,
}

/// Where a CSV scanner is within a record.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CsvState {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: the field's end, or the first of a doubled quote.
    QuoteInQuoted,
}

/// Advances the CSV state over `line` (RFC 4180: a quote opens a quoted field only at the
/// field's start); returns the number of field separators outside quotes.
fn scan_csv(state: &mut CsvState, line: &[u8], delimiter: u8) -> usize {
    let mut separators = 0;
    for &c in line {
        *state = match (*state, c) {
            (CsvState::Quoted, b'"') => CsvState::QuoteInQuoted,
            (CsvState::Quoted, _) => CsvState::Quoted,
            (CsvState::QuoteInQuoted, b'"') => CsvState::Quoted,
            (CsvState::FieldStart, b'"') => CsvState::Quoted,
            (_, b'\n') => CsvState::FieldStart,
            (_, c) if c == delimiter => {
                separators += 1;
                CsvState::FieldStart
            }
            _ => CsvState::Unquoted,
        };
    }
    separators
}

/// The most bytes one record may take; a longer one (a CSV quote left open, say) is a bad
/// record, cut here, and reading goes on after the line end where it was cut.
pub const MAX_RECORD: usize = CHUNK_BYTES;

/// Appends the next line of `reader`, with its line end, to `buf`, keeping at most `room`
/// bytes of it (the rest of a longer line is read and dropped). Returns the bytes read (0 at
/// the end of the file) and whether the whole line was kept.
fn read_line(
    reader: &mut BufReader<Box<dyn Read + Send>>,
    buf: &mut Vec<u8>,
    room: usize,
) -> std::io::Result<(usize, bool)> {
    let mut n = 0;
    loop {
        let available = match reader.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            // At the end of the file: a record of `room` bytes or more did not fit either.
            return Ok((n, n < room || n == 0));
        }
        let (end, found) = match memchr::memchr(b'\n', available) {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let take = end.min(room - n);
        buf.extend_from_slice(&available[..take]);
        reader.consume(take);
        n += take;
        if take < end {
            return Ok((n + reader.skip_until(b'\n')?, false));
        }
        if found {
            return Ok((n, true));
        }
    }
}

/// Reads the next chunk of records of a text file; `None` at its end. CSV records end at
/// a line end outside quotes, so a quoted field may hold line breaks; a chunk never ends
/// inside a record.
#[allow(clippy::too_many_arguments)]
fn read_chunk(
    spare: &mut Option<Chunk>,
    reader: &mut BufReader<Box<dyn Read + Send>>,
    line: &mut u64,
    offset: &mut u64,
    path: &Path,
    csv: Option<u8>,
    fields: usize,
    metrics: &OperatorMetrics,
) -> Result<Option<Chunk>, OperatorError> {
    let io = |e: std::io::Error| OperatorError::new(format!("reading `{}`: {e}", path.display()));
    // The previous chunk's buffers, emptied: their memory is already paged in.
    let mut chunk = match spare.take() {
        Some(mut c) => {
            c.buf.clear();
            c.records.clear();
            c.bad.clear();
            c
        }
        None => Chunk { buf: Vec::with_capacity(1 << 16), records: Vec::new(), bad: Vec::new() },
    };
    let mut state = CsvState::FieldStart;
    let mut separators = 0;
    let mut open_record = false;
    let mut read = 0;
    while open_record || (chunk.records.len() < CHUNK_LINES && chunk.buf.len() < CHUNK_BYTES) {
        let before = chunk.buf.len();
        let room = match open_record {
            true => MAX_RECORD.saturating_sub(before - chunk.records.last().map_or(0, |r| r.0)),
            false => MAX_RECORD,
        };
        let (n, kept) = read_line(reader, &mut chunk.buf, room).map_err(io)?;
        if n == 0 {
            if open_record {
                let i = chunk.records.len() - 1;
                chunk.bad.push((i, "a quoted field is not closed before the end of the file".into()));
            }
            break;
        }
        read += n;
        *line += 1;
        if !open_record {
            if kept && chunk.buf[before..].iter().all(u8::is_ascii_whitespace) {
                chunk.buf.truncate(before);
                continue;
            }
            chunk.records.push((before, *line));
            separators = 0;
        }
        if chunk.buf.last() != Some(&b'\n') {
            chunk.buf.push(b'\n');
        }
        if let Some(delimiter) = csv {
            separators += scan_csv(&mut state, &chunk.buf[before..], delimiter);
        }
        let i = chunk.records.len() - 1;
        if !kept {
            let why = match state {
                CsvState::Quoted => format!("a quoted field runs past {MAX_RECORD} bytes; is a quote unclosed?"),
                _ => format!("the record is longer than {MAX_RECORD} bytes"),
            };
            chunk.bad.push((i, why));
            open_record = false;
            state = CsvState::FieldStart;
        } else if csv.is_some() {
            open_record = state == CsvState::Quoted;
            if !open_record {
                state = CsvState::FieldStart;
                if separators + 1 != fields {
                    chunk.bad.push((i, format!("expected {fields} fields, found {}", separators + 1)));
                }
            }
        }
    }
    OperatorMetrics::add(&metrics.bytes_read, read as u64);
    *offset += read as u64;
    Ok((!chunk.records.is_empty()).then_some(chunk))
}

/// A chunk of records read from a text file.
struct Chunk {
    buf: Vec<u8>,
    /// Start offset in `buf` and first physical line of each record.
    records: Vec<(usize, u64)>,
    /// Records known bad before decoding, with why.
    bad: Vec<(usize, String)>,
}

impl Chunk {
    fn range(&self, i: usize) -> std::ops::Range<usize> {
        self.records[i].0..self.records.get(i + 1).map_or(self.buf.len(), |r| r.0)
    }

    fn raw(&self, i: usize) -> String {
        String::from_utf8_lossy(&self.buf[self.range(i)]).trim_end().to_string()
    }
}

/// One file-source subtask.
///
/// Without an event time it reads its files one after another. With one, it keeps up to
/// [`max_open_files`] files open and always reads next from the one whose event times are furthest
/// behind; its watermark is the smallest over the files it has not finished, and does not
/// move while files wait to be opened, so a folder of files that each span the same hours
/// gives the same answer at any parallelism.
pub struct FileReader {
    name: String,
    path: String,
    shown: String,
    format: FileFormat,
    header: bool,
    delimiter: u8,
    schema: SchemaRef,
    /// The declared columns decoded, by index, when consumers read fewer than all; the others
    /// are left null (see [`BuildContext::read_columns`]).
    read: Option<Vec<usize>>,
    /// Per consumer, comparisons its rows meet: Parquet row groups where each has one proved
    /// false are skipped.
    skips: Option<Vec<Vec<crate::plan::predicate::ColumnBound>>>,
    /// The declared schema of the decoded columns.
    read_declared: SchemaRef,
    /// The text schema the CSV or JSON-lines decoder reads with (decoded columns only).
    read_schema: SchemaRef,
    /// Per declared column left undecoded: a null column to slice, grown on demand.
    nulls: Vec<Option<ArrayRef>>,
    on_error: OnError,
    event_time: Option<usize>,
    /// The event time's index among the decoded columns.
    read_event_time: Option<usize>,
    out_of_orderness: i64,
    files: VecDeque<PathBuf>,
    open: Vec<Split>,
    max_open: usize,
    /// The largest event time of all files read, ms.
    max_event_time: i64,
    watermark: i64,
    pending_watermark: Option<i64>,
    watch: bool,
    seen: HashSet<PathBuf>,
    last_scan: Instant,
    subtask: usize,
    parallelism: usize,
    dead_letters: VecDeque<RecordBatch>,
    /// The last chunk read, kept for its buffers.
    spare: Option<Chunk>,
    json: json_lines::JsonLines,
    csv: Option<arrow::csv::reader::Decoder>,
    metrics: Arc<OperatorMetrics>,
    /// Files read to their end.
    done: Vec<SplitPosition>,
    /// Where to resume files of a restored checkpoint, when they open.
    resume: std::collections::HashMap<PathBuf, SplitPosition>,
    /// With `watch`: files modified longer ago are ignored and, once read, forgotten.
    horizon: Option<Duration>,
    /// S3 settings for `s3://` paths.
    s3: Option<crate::checkpoint::S3Options>,
}

/// How long a watching source remembers files by default.
const DEFAULT_HORIZON: Duration = Duration::from_secs(7 * 24 * 3600);

/// Whether `path` was last modified longer than `horizon` ago (a file that cannot be
/// looked at is not).
fn older_than(path: &Path, horizon: Duration) -> bool {
    std::fs::metadata(path).and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|age| age > horizon))
}

impl FileReader {
    /// The reader of subtask `ctx.subtask`, for the files dealt to it.
    pub fn new(cfg: &FileSource, ctx: &BuildContext, schema: &StreamSchema) -> Result<Self, OperatorError> {
        let path = cfg.path.resolve().map_err(OperatorError::new)?;
        let mut mine: VecDeque<PathBuf> = ctx.splits.iter().map(PathBuf::from).collect();
        let mut seen: HashSet<PathBuf> = ctx.all_splits.iter().map(PathBuf::from).collect();
        // A restored job: files every old subtask knew, with where each stopped.
        let mut resume = std::collections::HashMap::new();
        for (meta, _) in ctx.restored_state() {
            let state: ReaderState = serde_json::from_value(meta.clone()).map_err(|e| {
                OperatorError::new(format!(
                    "source `{}`: the checkpoint's reader state is unreadable: {e}",
                    ctx.operator
                ))
            })?;
            for f in state.files {
                resume.insert(f.path.clone(), f);
            }
        }
        let mut restored_done = Vec::new();
        if !resume.is_empty() {
            // Files found by watching belong to the subtask their name hashes to, as in `rescan`.
            let mut found: Vec<&PathBuf> = resume.keys().filter(|p| !seen.contains(*p)).collect();
            found.sort();
            for f in found {
                if owner_of(f, ctx.parallelism) == ctx.subtask {
                    mine.push_back(f.clone());
                }
            }
            seen.extend(resume.keys().cloned());
            mine.retain(|f| match resume.get(f) {
                Some(p) if p.done => {
                    restored_done.push(p.clone());
                    false
                }
                _ => true,
            });
            resume.retain(|_, p| !p.done && (p.offset > 0 || p.row > 0 || p.max_event_time > i64::MIN));
        }
        let horizon = cfg.watch.then(|| cfg.forget_after.map_or(DEFAULT_HORIZON, |d| d.0));
        if let (Some(h), Some(_)) = (horizon, &ctx.restored) {
            // A watching source's checkpoint names every file it has not forgotten: one of the
            // initial files it does not name was read and forgotten.
            let named: HashSet<PathBuf> = ctx
                .restored_state()
                .iter()
                .filter_map(|(m, _)| serde_json::from_value::<ReaderState>((*m).clone()).ok())
                .flat_map(|s| s.files.into_iter().map(|f| f.path))
                .collect();
            mine.retain(|f| named.contains(f) || !older_than(f, h));
        }
        let total: u64 = mine.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
        if !cfg.watch {
            OperatorMetrics::add(&ctx.metrics.bytes_total, total);
        }
        let csv = cfg.csv.as_ref();
        let event_time = schema.event_time.as_ref().and_then(|c| schema.schema.index_of(c).ok());
        let fields = schema.schema.fields();
        // Only nullable columns are left undecoded (the plan keeps non-nullable ones).
        let read: Option<Vec<usize>> = ctx.read_columns.as_ref().map(|cols| {
            (0..fields.len()).filter(|&i| cols.contains(fields[i].name()) || !fields[i].is_nullable()).collect()
        });
        let read_declared = match &read {
            Some(r) => Arc::new(schema.schema.project(r)?),
            None => schema.schema.clone(),
        };
        let read_event_time = schema.event_time.as_ref().and_then(|c| read_declared.index_of(c).ok());
        let json =
            json_lines::JsonLines::new(&read_declared.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>());
        Ok(FileReader {
            name: ctx.operator.clone(),
            path,
            shown: cfg.path.0.clone(),
            format: cfg.format,
            header: csv.is_none_or(|c| c.header),
            delimiter: csv.and_then(|c| c.delimiter.as_ref()).and_then(|d| d.bytes().next()).unwrap_or(b','),
            schema: schema.schema.clone(),
            read_schema: values::text_schema(&read_declared),
            nulls: vec![None; fields.len()],
            read,
            skips: ctx.skips.clone(),
            read_declared,
            on_error: cfg.on_error,
            event_time,
            read_event_time,
            out_of_orderness: cfg
                .event_time
                .as_ref()
                .and_then(|e| e.max_out_of_orderness)
                .map_or(0, |d| d.as_millis_i64()),
            seen,
            files: mine,
            open: Vec::new(),
            max_open: if event_time.is_some() { max_open_files(ctx.parallelism) } else { 1 },
            max_event_time: restored_done.iter().map(|d| d.max_event_time).max().unwrap_or(i64::MIN),
            watermark: i64::MIN,
            pending_watermark: None,
            watch: cfg.watch,
            last_scan: Instant::now(),
            subtask: ctx.subtask,
            parallelism: ctx.parallelism,
            dead_letters: VecDeque::new(),
            spare: None,
            json,
            csv: None,
            metrics: ctx.metrics.clone(),
            done: restored_done,
            resume,
            horizon,
            s3: cfg.s3.clone(),
        })
    }

    /// Picks up files that appeared since the last look; each goes to one subtask, chosen by
    /// a hash of its name that every subtask computes alike.
    fn rescan(&mut self) -> Result<(), OperatorError> {
        self.last_scan = Instant::now();
        let horizon = self.horizon;
        let old = |f: &Path| horizon.is_some_and(|h| older_than(f, h));
        let listed = list_files(&self.path, &self.shown, self.s3.as_ref())?;
        let mut current = HashSet::with_capacity(listed.len());
        for f in listed {
            if old(&f) {
                continue;
            }
            if self.seen.insert(f.clone()) && owner_of(&f, self.parallelism) == self.subtask {
                self.files.push_back(f.clone());
            }
            current.insert(f);
        }
        // Files past the horizon (or gone) are forgotten once read: scans ignore them now, so
        // what the source remembers and checkpoints stays bounded.
        if horizon.is_some() {
            self.seen.retain(|f| current.contains(f));
            self.done.retain(|d| current.contains(&d.path));
        }
        Ok(())
    }

    /// Opens waiting files up to the limit; false if none is open.
    fn open_more(&mut self) -> Result<bool, OperatorError> {
        while self.open.len() < self.max_open {
            let Some(path) = self.files.pop_front() else { break };
            let resume = self.resume.remove(&path);
            let open = self.open_file(&path, resume.as_ref())?;
            let max_event_time = resume.map_or(i64::MIN, |r| r.max_event_time);
            self.open.push(Split { open, path, max_event_time });
        }
        Ok(!self.open.is_empty())
    }

    /// Closes open split `s`, read to its end.
    fn finish_split(&mut self, s: usize) {
        let split = self.open.remove(s);
        self.done.push(SplitPosition {
            path: split.path,
            done: true,
            max_event_time: split.max_event_time,
            ..Default::default()
        });
    }

    /// Configures a Parquet reader: row groups no consumer can use are not read, only the
    /// columns read leave the file, and a restored file resumes after the rows already read.
    fn parquet_reader<T: parquet::file::reader::ChunkReader + 'static>(
        &self,
        b: ParquetRecordBatchReaderBuilder<T>,
        groups: &mut RowGroups,
        resume: Option<&SplitPosition>,
    ) -> parquet::errors::Result<ParquetRecordBatchReader> {
        let read = self.read.as_ref().map(|r| r.iter().map(|&i| self.schema.field(i).name()).collect::<Vec<_>>());
        let event_time = self.event_time.map(|i| self.schema.field(i).name().as_str());
        *groups = RowGroups::plan(&row_groups::Context {
            meta: b.metadata(),
            file_schema: b.schema(),
            parquet_schema: b.parquet_schema(),
            declared: &self.schema,
            skips: self.skips.as_deref().unwrap_or(&[]),
            event_time,
        });
        let b = b.with_row_groups(groups.kept());
        // A missing column is reported later.
        let b = match &read {
            Some(read) => {
                let roots = b.schema().fields().iter().enumerate().filter(|(_, f)| read.contains(&f.name()));
                let mask = ProjectionMask::roots(b.parquet_schema(), roots.map(|(i, _)| i));
                b.with_projection(mask)
            }
            None => b,
        };
        let skip = resume.map_or(0, |r| groups.read_before(r.row)) as usize;
        b.with_batch_size(CHUNK_LINES).with_offset(skip).build()
    }

    fn open_file(&mut self, path: &Path, resume: Option<&SplitPosition>) -> Result<Open, OperatorError> {
        let remote = path.to_str().filter(|p| p.starts_with("s3://"));
        let cannot = |e: &dyn std::fmt::Display| OperatorError::new(format!("cannot open `{}`: {e}", path.display()));
        Ok(match self.format {
            FileFormat::Parquet => {
                let mut groups = RowGroups::default();
                let (reader, size) = match remote {
                    Some(url) => {
                        let bytes = remote::ObjectReader::read_all(url, self.s3.as_ref())?;
                        let size = bytes.len() as u64;
                        let b = ParquetRecordBatchReaderBuilder::try_new(bytes);
                        (b.and_then(|b| self.parquet_reader(b, &mut groups, resume)), size)
                    }
                    None => {
                        let file = File::open(path).map_err(|e| cannot(&e))?;
                        let size = file.metadata().map_or(0, |m| m.len());
                        let b = ParquetRecordBatchReaderBuilder::try_new(file);
                        (b.and_then(|b| self.parquet_reader(b, &mut groups, resume)), size)
                    }
                };
                let reader = reader
                    .map_err(|e| OperatorError::new(format!("cannot read Parquet file `{}`: {e}", path.display())))?;
                OperatorMetrics::add(&self.metrics.bytes_read, size);
                OperatorMetrics::add(&self.metrics.row_groups_skipped, groups.skipped() as u64);
                let row = resume.map_or(0, |r| groups.read_before(r.row));
                Open::Parquet { reader, row, rows: groups.kept_rows(), groups }
            }
            _ if resume.is_some_and(|r| r.offset > 0) => {
                // A restored file resumes where its last checkpoint was: past its header.
                let r = resume.expect("checked");
                let source: Box<dyn Read + Send> = match remote {
                    Some(url) => Box::new(remote::ObjectReader::open(url, self.s3.as_ref(), r.offset)?),
                    None => {
                        use std::io::Seek;
                        let mut file = File::open(path).map_err(|e| cannot(&e))?;
                        file.seek(std::io::SeekFrom::Start(r.offset))
                            .map_err(|e| OperatorError::new(format!("reading `{}`: {e}", path.display())))?;
                        Box::new(file)
                    }
                };
                let capacity = if self.max_open > 1 { 1 << 18 } else { 1 << 20 };
                Open::Lines { reader: BufReader::with_capacity(capacity, source), line: r.line, offset: r.offset }
            }
            _ => {
                let source: Box<dyn Read + Send> = match remote {
                    Some(url) => Box::new(remote::ObjectReader::open(url, self.s3.as_ref(), 0)?),
                    None => Box::new(File::open(path).map_err(|e| cannot(&e))?),
                };
                let capacity = if self.max_open > 1 { 1 << 18 } else { 1 << 20 };
                let mut reader = BufReader::with_capacity(capacity, source);
                let mut offset = 0;
                let io = |e: std::io::Error| OperatorError::new(format!("reading `{}`: {e}", path.display()));
                // A byte-order mark is not part of the first record.
                if reader.fill_buf().map_err(io)?.starts_with(b"\xEF\xBB\xBF") {
                    reader.consume(3);
                    offset += 3;
                }
                let mut line = 0;
                if self.format == FileFormat::Csv && self.header {
                    // The header's names are not used (columns are by position); it may span lines.
                    let mut state = CsvState::FieldStart;
                    let mut skip = Vec::new();
                    loop {
                        let before = skip.len();
                        let (n, kept) = read_line(&mut reader, &mut skip, MAX_RECORD - before).map_err(io)?;
                        OperatorMetrics::add(&self.metrics.bytes_read, n as u64);
                        offset += n as u64;
                        if n == 0 && state == CsvState::Quoted {
                            return Err(OperatorError::new(format!(
                                "`{}`: a quoted field of the header is not closed before the end of the file",
                                path.display()
                            )));
                        }
                        if n == 0 {
                            break;
                        }
                        line += 1;
                        scan_csv(&mut state, &skip[before..], self.delimiter);
                        if !kept {
                            return Err(OperatorError::new(format!(
                                "`{}`: the header runs past {MAX_RECORD} bytes; is a quote unclosed?",
                                path.display()
                            )));
                        }
                        if state != CsvState::Quoted {
                            break;
                        }
                    }
                }
                Open::Lines { reader, line, offset }
            }
        })
    }

    /// Decodes CSV records `idx` of `chunk` with the reused decoder, into text columns: all
    /// of them, or why not.
    fn decode(&mut self, chunk: &Chunk, idx: &[usize]) -> Result<Option<RecordBatch>, String> {
        let contiguous = idx.windows(2).all(|w| w[1] == w[0] + 1);
        let result = match (idx.first(), idx.last()) {
            (Some(&a), Some(&b)) if contiguous => self.decode_csv(&chunk.buf[chunk.range(a).start..chunk.range(b).end]),
            (Some(_), Some(_)) => {
                let bytes: Vec<u8> = idx.iter().flat_map(|&i| chunk.buf[chunk.range(i)].iter().copied()).collect();
                self.decode_csv(&bytes)
            }
            _ => Ok(None),
        }
        .map_err(|e| e.to_string());
        if result.is_err() {
            // A decoder that failed may hold part of a record.
            self.csv = None;
        }
        result
    }

    fn decode_csv(&mut self, bytes: &[u8]) -> Result<Option<RecordBatch>, arrow::error::ArrowError> {
        if self.csv.is_none() {
            self.csv = Some(
                arrow::csv::ReaderBuilder::new(values::text_schema(&self.schema))
                    .with_projection(self.read.clone().unwrap_or_else(|| (0..self.schema.fields().len()).collect()))
                    .with_header(false)
                    .with_delimiter(self.delimiter)
                    .with_batch_size(CHUNK_LINES)
                    .build_decoder(),
            );
        }
        let d = self.csv.as_mut().expect("built");
        // The decoder takes bytes until its batch is full (then none until flushed) or the
        // input is used up; every byte is decoded.
        let mut batches = Vec::new();
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
        self.concat(batches)
    }

    fn concat(&self, mut batches: Vec<RecordBatch>) -> Result<Option<RecordBatch>, arrow::error::ArrowError> {
        match batches.len() {
            0 => Ok(None),
            1 => Ok(batches.pop()),
            _ => Ok(Some(concat_batches(&self.read_schema, &batches)?)),
        }
    }

    /// Decodes records `idx` of `chunk`: good ones in bulk, and on failure the run halved
    /// until the bad records stand alone.
    fn decode_records(
        &mut self,
        chunk: &Chunk,
        idx: &[usize],
        good: &mut Vec<(RecordBatch, Vec<usize>)>,
        bad: &mut Vec<(usize, String)>,
    ) {
        if idx.is_empty() {
            return;
        }
        match self.decode(chunk, idx) {
            Ok(Some(b)) if b.num_rows() == idx.len() => good.push((b, idx.to_vec())),
            Ok(b) if idx.len() == 1 => {
                let n = b.map_or(0, |b| b.num_rows());
                bad.push((idx[0], format!("expected one record on the line, found {n}")));
            }
            Err(e) if idx.len() == 1 => bad.push((idx[0], e)),
            _ => {
                let (left, right) = idx.split_at(idx.len() / 2);
                self.decode_records(chunk, left, good, bad);
                self.decode_records(chunk, right, good, bad);
            }
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

    /// JSON-lines records `idx` of `chunk` as text columns, with the records they are; the
    /// lines refused go to `bad`.
    fn json_batch(
        &mut self,
        chunk: &Chunk,
        idx: Vec<usize>,
        bad: &mut Vec<(usize, String)>,
    ) -> Result<(RecordBatch, Vec<usize>), OperatorError> {
        let (columns, refused) = self.json.decode(&chunk.buf, idx.iter().map(|&i| chunk.range(i)))?;
        let refused_at: HashSet<usize> = refused.iter().map(|r| r.0).collect();
        bad.extend(refused.into_iter().map(|(n, why)| (idx[n], why)));
        let rows: Vec<usize> =
            idx.into_iter().enumerate().filter(|(n, _)| !refused_at.contains(n)).map(|(_, i)| i).collect();
        let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows.len()));
        Ok((RecordBatch::try_new_with_options(self.read_schema.clone(), columns, &options)?, rows))
    }

    /// The rows of a chunk of text records, with bad records handled.
    fn lines_batch(&mut self, chunk: &Chunk, path: &Path) -> Result<RecordBatch, OperatorError> {
        let mut bad = chunk.bad.clone();
        let known: HashSet<usize> = bad.iter().map(|b| b.0).collect();
        let idx: Vec<usize> = (0..chunk.records.len()).filter(|i| !known.contains(i)).collect();
        let mut good = Vec::new();
        if self.format == FileFormat::Jsonl {
            good.push(self.json_batch(chunk, idx, &mut bad)?);
        } else if chunk.bad.is_empty()
            && let Some(b) = self.decode(chunk, &idx).ok().flatten().filter(|b| b.num_rows() == idx.len())
        {
            good.push((b, idx));
        } else {
            self.decode_records(chunk, &idx, &mut good, &mut bad);
        }
        let (batch, rows) = match good.len() {
            0 => (RecordBatch::new_empty(self.read_schema.clone()), Vec::new()),
            1 => good.pop().expect("one"),
            _ => {
                let batch = concat_batches(&self.read_schema, good.iter().map(|g| &g.0))?;
                (batch, good.into_iter().flat_map(|g| g.1).collect())
            }
        };
        let (batch, errors) = self.conform(&batch, path)?;
        let batch = self.expand(batch)?;
        bad.extend(errors.into_iter().map(|(row, why)| (rows[row], why)));
        bad.sort_by_key(|b| b.0);
        let shown = path.display().to_string();
        let bad =
            bad.into_iter().map(|(i, why)| (chunk.raw(i), why, format!("{shown}:{}", chunk.records[i].1))).collect();
        self.bad(bad)?;
        Ok(batch)
    }

    /// The decoded columns of `batch` in the declared types, and the rows that are not.
    fn conform(&self, batch: &RecordBatch, path: &Path) -> Result<(RecordBatch, values::RowErrors), OperatorError> {
        values::conform(batch, &self.read_declared, self.read_event_time).map_err(|e| match e {
            values::ConformError::Missing(c) => OperatorError::new(format!("`{}` has no column `{c}`", path.display())),
            values::ConformError::Arrow(e) => OperatorError::new(format!("reading `{}`: {e}", path.display())),
        })
    }

    /// A batch of the decoded columns as a batch of every declared column, the undecoded ones
    /// null (slices of one shared null column: no allocation per batch).
    fn expand(&mut self, batch: RecordBatch) -> Result<RecordBatch, OperatorError> {
        let Some(read) = &self.read else { return Ok(batch) };
        let rows = batch.num_rows();
        let mut decoded = batch.columns().iter();
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for (i, field) in self.schema.fields().iter().enumerate() {
            if read.contains(&i) {
                columns.push(decoded.next().expect("one decoded column per read column").clone());
                continue;
            }
            let null = match &self.nulls[i] {
                Some(n) if n.len() >= rows => n,
                _ => self.nulls[i].insert(arrow::array::new_null_array(field.data_type(), rows.max(CHUNK_LINES))),
            };
            columns.push(null.slice(0, rows));
        }
        let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?)
    }

    /// The rows of a Parquet batch in the declared types, with bad rows handled.
    fn parquet_batch(
        &mut self,
        batch: RecordBatch,
        first_row: u64,
        groups: &RowGroups,
        path: &Path,
    ) -> Result<RecordBatch, OperatorError> {
        let (good, errors) = self.conform(&batch, path)?;
        let shown = path.display().to_string();
        let bad = errors
            .into_iter()
            .map(|(row, why)| {
                let mut raw = Vec::new();
                let mut w = arrow::json::LineDelimitedWriter::new(&mut raw);
                let _ = w.write(&batch.slice(row, 1)).and_then(|_| w.finish());
                let raw = String::from_utf8_lossy(&raw).trim_end().to_string();
                (raw, why, format!("{shown}: row {}", groups.file_row(first_row + row as u64) + 1))
            })
            .collect();
        self.bad(bad)?;
        self.expand(good)
    }

    /// Reads the next batch from open split `s`; `None` at its end.
    fn read_split(&mut self, s: usize) -> Result<Option<RecordBatch>, OperatorError> {
        let split = &mut self.open[s];
        let path = split.path.clone();
        match &mut split.open {
            Open::Parquet { reader, row, rows, groups } => {
                let next = reader.next();
                let first = *row;
                if let Some(Ok(b)) = &next {
                    *row += b.num_rows() as u64;
                }
                // Event times of the skipped row groups now passed count as read.
                let read = if next.is_some() { *row } else { *rows };
                if let Some(t) = groups.passed_event_time(read) {
                    split.max_event_time = split.max_event_time.max(t);
                    self.max_event_time = self.max_event_time.max(t);
                }
                let groups = groups.clone();
                match next {
                    Some(Ok(b)) => self.parquet_batch(b, first, &groups, &path).map(Some),
                    Some(Err(e)) => Err(OperatorError::new(format!("reading `{}`: {e}", path.display()))),
                    None => Ok(None),
                }
            }
            Open::Lines { reader, line, offset } => {
                let csv = (self.format == FileFormat::Csv).then_some(self.delimiter);
                let fields = self.schema.fields().len();
                match read_chunk(&mut self.spare, reader, line, offset, &path, csv, fields, &self.metrics)? {
                    Some(c) => {
                        let batch = self.lines_batch(&c, &path);
                        self.spare = Some(c);
                        batch.map(Some)
                    }
                    None => Ok(None),
                }
            }
        }
    }

    /// The watermark the splits allow: none while files wait to be opened, else the smallest
    /// over open files, or over everything read once all are done.
    fn allowed_watermark(&self) -> Option<i64> {
        if !self.files.is_empty() {
            return None;
        }
        let t = match self.open.iter().map(|s| s.max_event_time).min() {
            Some(t) => t,
            None => self.max_event_time,
        };
        (t > i64::MIN).then(|| t.saturating_sub(self.out_of_orderness).saturating_sub(1))
    }
}

impl SourceReader for FileReader {
    fn next(&mut self) -> Result<SourceEvent, OperatorError> {
        loop {
            if let Some(d) = self.dead_letters.pop_front() {
                return Ok(SourceEvent::DeadLetters(d));
            }
            if let Some(w) = self.pending_watermark.take() {
                return Ok(SourceEvent::Watermark(w));
            }
            if !self.open_more()? {
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
            // The open file furthest behind in event time (the first, without event time).
            let s = (0..self.open.len()).min_by_key(|&s| self.open[s].max_event_time).expect("one is open");
            let batch = self.read_split(s)?;
            match batch {
                Some(b) => {
                    if let Some(m) = self.event_time.and_then(|c| crate::runtime::task::max_event_time(&b, c)) {
                        self.open[s].max_event_time = self.open[s].max_event_time.max(m);
                        self.max_event_time = self.max_event_time.max(m);
                    }
                    // A file read to its end is closed now, not when it is next in turn.
                    let split = &mut self.open[s];
                    if split
                        .open
                        .at_end()
                        .map_err(|e| OperatorError::new(format!("reading `{}`: {e}", split.path.display())))?
                    {
                        self.finish_split(s);
                    }
                    self.advance_watermark();
                    if b.num_rows() > 0 {
                        return Ok(SourceEvent::Batch(b));
                    }
                }
                None => {
                    self.finish_split(s);
                    self.advance_watermark();
                }
            }
        }
    }

    fn explicit_watermarks(&self) -> bool {
        self.event_time.is_some()
    }

    fn has_buffered(&self) -> bool {
        !self.dead_letters.is_empty() || self.pending_watermark.is_some()
    }

    fn position(&mut self) -> serde_json::Value {
        let mut files = self.done.clone();
        for split in &self.open {
            let (offset, line, row) = match &split.open {
                Open::Lines { line, offset, .. } => (*offset, *line, 0),
                Open::Parquet { row, groups, .. } => (0, 0, groups.file_row(*row)),
            };
            files.push(SplitPosition {
                path: split.path.clone(),
                offset,
                line,
                row,
                done: false,
                max_event_time: split.max_event_time,
            });
        }
        // Files waiting: those of a restored checkpoint keep their position; others found
        // by watching must be known to a restored job.
        for f in &self.files {
            match self.resume.get(f) {
                Some(p) => files.push(p.clone()),
                None if self.watch => {
                    files.push(SplitPosition { path: f.clone(), max_event_time: i64::MIN, ..Default::default() })
                }
                None => {}
            }
        }
        serde_json::to_value(ReaderState { files }).expect("reader state serializes")
    }
}

/// The subtask a file found by watching belongs to: a hash of its name every subtask computes alike.
fn owner_of(f: &Path, parallelism: usize) -> usize {
    let h = f.to_string_lossy().bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    (h % parallelism.max(1) as u64) as usize
}

impl FileReader {
    fn advance_watermark(&mut self) {
        if self.event_time.is_none() {
            return;
        }
        if let Some(w) = self.allowed_watermark().filter(|w| *w > self.watermark) {
            self.watermark = w;
            self.pending_watermark = Some(w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_records_end_outside_quotes() {
        let mut s = CsvState::FieldStart;
        assert_eq!(scan_csv(&mut s, b"1,\"a\n", b','), 1);
        assert!(s == CsvState::Quoted);
        assert_eq!(scan_csv(&mut s, b"b\"\"c\",2\n", b','), 1);
        assert!(s == CsvState::FieldStart);
        let mut s = CsvState::FieldStart;
        assert_eq!(scan_csv(&mut s, b"1,ab\"c,3\n", b','), 2);
        assert!(s == CsvState::FieldStart, "a quote inside an unquoted field is text");
    }

    #[test]
    fn lines_are_kept_up_to_the_room_and_every_byte_is_counted() {
        // A small reader buffer, so lines span refills.
        let text = b"abc\nabcdef\nabcde\nabcdefgh\nab\nabcdef".to_vec();
        let mut reader: BufReader<Box<dyn Read + Send>> =
            BufReader::with_capacity(3, Box::new(std::io::Cursor::new(text)));
        let mut got = Vec::new();
        loop {
            let mut buf = Vec::new();
            let (n, kept) = read_line(&mut reader, &mut buf, 6).unwrap();
            if n == 0 {
                break;
            }
            got.push((String::from_utf8(buf).unwrap(), n, kept));
        }
        let want = [
            ("abc\n", 4, true),
            ("abcdef", 7, false),
            ("abcde\n", 6, true),
            ("abcdef", 9, false),
            ("ab\n", 3, true),
            // At the end of the file as before it: a line of the room's length does not fit.
            ("abcdef", 6, false),
        ];
        let want: Vec<(String, usize, bool)> = want.iter().map(|(l, n, k)| (l.to_string(), *n, *k)).collect();
        assert_eq!(got, want);
    }
}
