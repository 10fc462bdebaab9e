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
