//! Files under `s3://bucket/prefix` URLs, read through the same `object_store` client as
//! checkpoint storage: listing (with globs), and a reader that fetches ranges of an object on
//! demand, so a large object streams in bounded memory.

use std::io::Read;

use crate::checkpoint::{S3Options, Storage};
use crate::runtime::OperatorError;

/// How much of an object one request fetches.
const RANGE_BYTES: u64 = 8 << 20;

/// `s3://bucket/key` split into the bucket's URL and the key.
pub fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then(|| (format!("s3://{bucket}"), key.to_string()))
}

fn bucket(url: &str, s3: Option<&S3Options>, shown: &str) -> Result<(Storage, String), OperatorError> {
    let (bucket, key) =
        split_url(url).ok_or_else(|| OperatorError::new(format!("`{shown}` is not an s3://bucket/key URL")))?;
    let storage = Storage::open(&bucket, s3).map_err(|e| OperatorError::external(e.0, true))?;
    Ok((storage, key))
}

/// The objects `url` names, sorted, as `s3://bucket/key` URLs: the object itself, every object
/// under it as a folder, or the matches of a glob in its key. Objects whose last path part
/// starts with `.` or `_` are skipped, as local hidden files are.
pub fn list(url: &str, s3: Option<&S3Options>, shown: &str) -> Result<Vec<String>, OperatorError> {
    let (storage, key) = bucket(url, s3, shown)?;
    let glob_at = key.find(['*', '?', '[']);
    let base = match glob_at {
        Some(i) => key[..i].rsplit_once('/').map_or("", |(d, _)| d),
        None => key.trim_end_matches('/'),
    };
    let pattern = match glob_at {
        Some(_) => Some(
            glob::Pattern::new(&key).map_err(|e| OperatorError::new(format!("`{shown}` is not a valid glob: {e}")))?,
        ),
        None => None,
    };
    let bucket_url = storage.url().trim_end_matches('/').to_string();
    let mut out: Vec<String> = storage
        .list(base)
        .map_err(|e| OperatorError::external(e.0, true))?
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| {
            let last = name.rsplit('/').next().unwrap_or(name);
            let visible = !last.starts_with(['.', '_']);
            let matches = match &pattern {
                Some(p) => p.matches(name),
                None => name == base || name.starts_with(&format!("{base}/")) || base.is_empty(),
            };
            visible && matches
        })
        .map(|name| format!("{bucket_url}/{name}"))
        .collect();
    out.sort();
    Ok(out)
}

/// Reads an object from `offset` on, a range at a time.
pub struct ObjectReader {
    storage: Storage,
    key: String,
    pos: u64,
    len: u64,
    buf: Vec<u8>,
    at: usize,
}

impl ObjectReader {
    /// A reader of `url` from byte `offset`.
    pub fn open(url: &str, s3: Option<&S3Options>, offset: u64) -> Result<ObjectReader, OperatorError> {
        let (storage, key) = bucket(url, s3, url)?;
        let len = storage.size(&key).map_err(|e| OperatorError::external(e.0, true))?;
        Ok(ObjectReader { storage, key, pos: offset.min(len), len, buf: Vec::new(), at: 0 })
    }

    /// The whole object (for Parquet, which reads its footer first).
    pub fn read_all(url: &str, s3: Option<&S3Options>) -> Result<bytes::Bytes, OperatorError> {
        let (storage, key) = bucket(url, s3, url)?;
        let len = storage.size(&key).map_err(|e| OperatorError::external(e.0, true))?;
        let data = storage.get_range(&key, 0..len).map_err(|e| OperatorError::external(e.0, true))?;
        Ok(bytes::Bytes::from(data))
    }
}

impl Read for ObjectReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buf.len() {
            if self.pos >= self.len {
                return Ok(0);
            }
            let end = (self.pos + RANGE_BYTES).min(self.len);
            self.buf = self.storage.get_range(&self.key, self.pos..end).map_err(std::io::Error::other)?;
            self.at = 0;
            self.pos = end;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Bytes per uploaded part (S3 wants at least 5 MiB for every part but the last).
const PART_BYTES: usize = 8 << 20;

/// Uploads the local file `file` as object `url` without completing the upload (the object
/// stays invisible until [`complete`]); returns the upload id and part ids.
pub fn stage(
    url: &str,
    file: &std::path::Path,
    s3: Option<&S3Options>,
) -> Result<(String, Vec<String>), OperatorError> {
    let (storage, key) = bucket(url, s3, url)?;
    let mut f = std::fs::File::open(file)
        .map_err(|e| OperatorError::io(format_args!("cannot read `{}`", file.display()), e))?;
    let mut first = true;
    let parts = std::iter::from_fn(move || {
        let mut part = Vec::with_capacity(PART_BYTES);
        match f.by_ref().take(PART_BYTES as u64).read_to_end(&mut part) {
            Ok(0) if !first => None,
            Ok(_) => {
                first = false;
                Some(Ok(part))
            }
            Err(e) => Some(Err(e)),
        }
    });
    storage.stage(&key, parts).map_err(|e| OperatorError::external(e.0, true))
}

/// Completes a staged upload of `url` (idempotent).
pub fn complete(url: &str, upload: &str, parts: &[String], s3: Option<&S3Options>) -> Result<(), OperatorError> {
    let (storage, key) = bucket(url, s3, url)?;
    storage.complete(&key, upload, parts).map_err(|e| OperatorError::external(e.0, true))
}

/// Checks that the bucket of `url` answers (a missing object is fine; refused credentials or
/// an unreachable endpoint are not), so a sink that cannot write fails when it opens.
pub fn probe(url: &str, s3: Option<&S3Options>) -> Result<(), OperatorError> {
    let (storage, key) = bucket(url, s3, url)?;
    let probe = format!("{}/.sluice-probe", key.trim_end_matches('/'));
    match storage.get(probe.trim_start_matches('/')) {
        Ok(_) => Ok(()),
        Err(e) => Err(OperatorError::external(e.0, true)),
    }
}
