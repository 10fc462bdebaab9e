//! Checkpoint storage: a `file://` folder or an `s3://bucket/prefix`, both through the
//! `object_store` crate (one API; atomic puts; create-if-absent for manifests and leases).
//!
//! Calls are blocking wrappers over one shared tokio runtime, except [`Storage::put_async`] and
//! [`Storage::put_file`], which subtask snapshots upload through without waiting.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use futures::TryStreamExt;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::spec::values::ConfigString;

/// S3 settings of a storage URL (every field optional: the standard AWS environment, instance
/// and web-identity credentials apply otherwise).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Options {
    /// The region (default: `AWS_REGION`, else `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// An S3-compatible endpoint such as `http://127.0.0.1:9000` (default: AWS).
    #[serde(default)]
    pub endpoint: Option<ConfigString>,
    /// Address buckets in the path (`endpoint/bucket/key`) rather than in the host name;
    /// the default with a custom `endpoint`.
    #[serde(default)]
    pub path_style: Option<bool>,
    /// Access key id, such as `${env:S3_KEY}` (default: the credential chain).
    #[serde(default)]
    pub access_key_id: Option<ConfigString>,
    /// Secret access key, such as `${file:/run/secrets/s3}`.
    #[serde(default)]
    pub secret_access_key: Option<ConfigString>,
    /// Session token for temporary credentials.
    #[serde(default)]
    pub session_token: Option<ConfigString>,
}

/// A storage failure, with what was being done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StorageError(pub String);

/// Storage results.
pub type StorageResult<T> = Result<T, StorageError>;

/// Part size of multipart uploads of large files.
const MULTIPART_CHUNK: usize = 16 << 20;

/// Puts the file `from` at `to`, a new path: hard-linked where the file system allows, else
/// copied.
pub(crate) fn link_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)?;
    }
    Ok(())
}

/// The size and XXH64 of a local file.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut hash = twox_hash::XxHash64::with_seed(0);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((size, std::hash::Hasher::finish(&hash)));
        }
        std::hash::Hasher::write(&mut hash, &buf[..n]);
        size += n as u64;
    }
}

/// The runtime every storage call runs on.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-io")
            .enable_all()
            .build()
            .expect("the I/O runtime starts")
    })
}

/// One storage location: an object store and the prefix everything goes under.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// Resumable multipart uploads (S3): parts uploaded by one process, completed by another.
    multipart: Option<Arc<dyn MultipartStore>>,
    prefix: StorePath,
    url: String,
    /// The folder of a local storage: files go in and out of it by hard link where they can.
    local: Option<PathBuf>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Storage({})", self.url)
    }
}

/// Whether an error says the object is absent.
pub fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl Storage {
    /// Opens `url` (`file://folder`, a plain folder, or `s3://bucket/prefix`). A local folder
    /// is created; nothing is contacted yet for S3.
    pub fn open(url: &str, s3: Option<&S3Options>) -> StorageResult<Storage> {
        let bad = |why: String| StorageError(format!("storage `{url}`: {why}"));
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("the URL names no bucket".into()));
            }
            let o = s3.cloned().unwrap_or_default();
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            let resolve = |c: &Option<ConfigString>| c.as_ref().map(|c| c.resolve().map_err(&bad)).transpose();
            if let Some(r) = o.region.clone().or_else(|| std::env::var("AWS_REGION").ok()) {
                b = b.with_region(r);
            }
            let endpoint = resolve(&o.endpoint)?;
            if let Some(e) = &endpoint {
                b = b.with_endpoint(e.clone()).with_allow_http(e.starts_with("http://"));
            }
            let path_style = o.path_style.unwrap_or(endpoint.is_some());
            b = b.with_virtual_hosted_style_request(!path_style);
            if let Some(k) = resolve(&o.access_key_id)? {
                b = b.with_access_key_id(k);
            }
            if let Some(k) = resolve(&o.secret_access_key)? {
                b = b.with_secret_access_key(k);
            }
            if let Some(t) = resolve(&o.session_token)? {
                b = b.with_token(t);
            }
            let retry = object_store::RetryConfig {
                max_retries: 3,
                retry_timeout: std::time::Duration::from_secs(20),
                ..Default::default()
            };
            let store = Arc::new(b.with_retry(retry).build().map_err(|e| bad(e.to_string()))?);
            return Ok(Storage {
                multipart: Some(store.clone()),
                store,
                prefix: StorePath::from(prefix.trim_end_matches('/')),
                url: url.to_string(),
                local: None,
            });
        }
        let folder = url.strip_prefix("file://").unwrap_or(url);
        if folder.is_empty() {
            return Err(bad("the URL names no folder".into()));
        }
        std::fs::create_dir_all(folder).map_err(|e| bad(format!("cannot create the folder: {e}")))?;
        let root = std::fs::canonicalize(folder).map_err(|e| bad(e.to_string()))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| bad(e.to_string()))?
            .with_automatic_cleanup(true);
        Ok(Storage {
            store: Arc::new(store),
            multipart: None,
            prefix: StorePath::default(),
            url: url.to_string(),
            local: Some(root),
        })
    }

    /// Opens `url` to read what is there: a local folder must exist (nothing is created).
    pub fn open_existing(url: &str, s3: Option<&S3Options>) -> StorageResult<Storage> {
        if !url.starts_with("s3://") {
            let folder = url.strip_prefix("file://").unwrap_or(url);
            if !std::path::Path::new(folder).is_dir() {
                return Err(StorageError(format!("storage `{url}`: no such folder")));
            }
        }
        Storage::open(url, s3)
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The full path of `name` (a `/`-separated relative path).
    fn path(&self, name: &str) -> StorePath {
        let mut p = self.prefix.clone();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    fn error(&self, what: &str, name: &str, e: object_store::Error) -> StorageError {
        let shown = match &e {
            object_store::Error::Generic { source, .. } => source.to_string(),
            e => e.to_string(),
        };
        StorageError(format!("cannot {what} `{name}` in `{}`: {shown}", self.url))
    }

    /// Writes `name` (replacing it).
    pub fn put(&self, name: &str, bytes: Vec<u8>) -> StorageResult<()> {
        runtime().block_on(self.put_async(name, bytes))
    }

    /// Writes `name` (replacing it), for awaiting on the storage runtime.
    pub async fn put_async(&self, name: &str, bytes: Vec<u8>) -> StorageResult<()> {
        self.store.put(&self.path(name), PutPayload::from(bytes)).await.map_err(|e| self.error("write", name, e))?;
        Ok(())
    }

    /// Stores the local file `file` as `name` (replacing it); returns its size and XXH64. A
    /// local storage hard-links the file in when the file system allows (stored files are
    /// never changed in place); S3 gets a multipart upload when the file is large.
    pub async fn put_file(&self, name: &str, file: &Path) -> StorageResult<(u64, u64)> {
        let read_error = |e: std::io::Error| StorageError(format!("cannot read {} to store it: {e}", file.display()));
        if let Some(root) = &self.local {
            let to = root.join(name);
            let mut tmp = to.clone().into_os_string();
            tmp.push(format!(".tmp-{}", std::process::id()));
            let tmp = PathBuf::from(tmp);
            let write_error = |e: std::io::Error| StorageError(format!("cannot write `{name}` in `{}`: {e}", self.url));
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(write_error)?;
            }
            let _ = std::fs::remove_file(&tmp);
            link_or_copy(file, &tmp).map_err(write_error)?;
            std::fs::rename(&tmp, &to).map_err(write_error)?;
            return hash_file(&to).map_err(read_error);
        }
        let mut f = std::fs::File::open(file).map_err(read_error)?;
        let len = f.metadata().map_err(read_error)?.len();
        let path = self.path(name);
        let mut hash = twox_hash::XxHash64::with_seed(0);
        if len <= MULTIPART_CHUNK as u64 {
            let mut bytes = Vec::with_capacity(len as usize);
            f.read_to_end(&mut bytes).map_err(read_error)?;
            std::hash::Hasher::write(&mut hash, &bytes);
            let size = bytes.len() as u64;
            self.store.put(&path, PutPayload::from(bytes)).await.map_err(|e| self.error("write", name, e))?;
            return Ok((size, std::hash::Hasher::finish(&hash)));
        }
        let upload = self.store.put_multipart(&path).await.map_err(|e| self.error("start uploading", name, e))?;
        let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, MULTIPART_CHUNK);
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        let sent: StorageResult<()> = async {
            loop {
                let n = f.read(&mut buf).map_err(read_error)?;
                if n == 0 {
                    return Ok(());
                }
                std::hash::Hasher::write(&mut hash, &buf[..n]);
                size += n as u64;
                w.wait_for_capacity(4).await.map_err(|e| self.error("upload", name, e))?;
                w.write(&buf[..n]);
            }
        }
        .await;
        if let Err(e) = sent {
            // Parts already sent would stay in the bucket, unlisted, until aborted.
            let _ = w.abort().await;
            return Err(e);
        }
        w.finish().await.map_err(|e| self.error("upload", name, e))?;
        Ok((size, std::hash::Hasher::finish(&hash)))
    }

    /// Fetches each `name` into the local file `to` (replacing it): per item, in order, the size
    /// and XXH64 of what was fetched, `Ok(None)` when `name` does not exist. A local storage
    /// hard-links; S3 fetches up to 8 at a time.
    pub fn fetch_many(&self, items: &[(&str, PathBuf)]) -> Vec<StorageResult<Option<(u64, u64)>>> {
        if let Some(root) = &self.local {
            return items.iter().map(|(name, to)| self.fetch_local(root, name, to)).collect();
        }
        use futures::StreamExt;
        runtime()
            .block_on(futures::stream::iter(items).map(|(name, to)| self.fetch_remote(name, to)).buffered(8).collect())
    }

    fn fetch_local(&self, root: &Path, name: &str, to: &Path) -> StorageResult<Option<(u64, u64)>> {
        let _ = std::fs::remove_file(to);
        let from = root.join(name);
        if !from.exists() {
            return Ok(None);
        }
        link_or_copy(&from, to)
            .map_err(|e| StorageError(format!("cannot copy `{name}` of `{}` to {}: {e}", self.url, to.display())))?;
        hash_file(to).map(Some).map_err(|e| self.error_io("read", name, e))
    }

    async fn fetch_remote(&self, name: &str, to: &Path) -> StorageResult<Option<(u64, u64)>> {
        let write_error = |e: std::io::Error| StorageError(format!("cannot write {}: {e}", to.display()));
        let _ = std::fs::remove_file(to);
        let mut stream = match self.store.get(&self.path(name)).await {
            Ok(r) => r.into_stream(),
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.error("read", name, e)),
        };
        let mut out = std::io::BufWriter::new(std::fs::File::create(to).map_err(write_error)?);
        let mut hash = twox_hash::XxHash64::with_seed(0);
        let mut size = 0u64;
        while let Some(chunk) = stream.try_next().await.map_err(|e| self.error("read", name, e))? {
            std::hash::Hasher::write(&mut hash, &chunk);
            size += chunk.len() as u64;
            out.write_all(&chunk).map_err(write_error)?;
        }
        out.flush().map_err(write_error)?;
        Ok(Some((size, std::hash::Hasher::finish(&hash))))
    }

    fn error_io(&self, what: &str, name: &str, e: std::io::Error) -> StorageError {
        StorageError(format!("cannot {what} `{name}` in `{}`: {e}", self.url))
    }

    /// Writes `name` only if it does not exist; `Ok(false)` when it did.
    pub fn put_if_absent(&self, name: &str, bytes: Vec<u8>) -> StorageResult<bool> {
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match runtime().block_on(self.store.put_opts(&self.path(name), PutPayload::from(bytes), opts)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(self.error("create", name, e)),
        }
    }

    /// Reads `name`; `Ok(None)` when it does not exist.
    pub fn get(&self, name: &str) -> StorageResult<Option<Vec<u8>>> {
        let path = self.path(name);
        runtime().block_on(async {
            match self.store.get(&path).await {
                Ok(r) => Ok(Some(r.bytes().await.map_err(|e| self.error("read", name, e))?.to_vec())),
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) => Err(self.error("read", name, e)),
            }
        })
    }

    /// The size of `name` in bytes; `Ok(None)` when it does not exist.
    pub fn size_if_exists(&self, name: &str) -> StorageResult<Option<u64>> {
        match runtime().block_on(self.store.head(&self.path(name))) {
            Ok(m) => Ok(Some(m.size)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.error("look at", name, e)),
        }
    }

    /// The size of `name` in bytes.
    pub fn size(&self, name: &str) -> StorageResult<u64> {
        runtime()
            .block_on(self.store.head(&self.path(name)))
            .map(|m| m.size)
            .map_err(|e| self.error("look at", name, e))
    }

    /// Bytes `range` of `name`.
    pub fn get_range(&self, name: &str, range: std::ops::Range<u64>) -> StorageResult<Vec<u8>> {
        runtime()
            .block_on(self.store.get_range(&self.path(name), range))
            .map(|b| b.to_vec())
            .map_err(|e| self.error("read", name, e))
    }

    /// Uploads `parts` as the parts of a multipart upload of `name` that is not completed (the
    /// object stays invisible); returns the upload id and the part ids.
    pub fn stage(
        &self,
        name: &str,
        parts: impl Iterator<Item = std::io::Result<Vec<u8>>>,
    ) -> StorageResult<(String, Vec<String>)> {
        let mp =
            self.multipart.as_ref().ok_or_else(|| StorageError(format!("`{}` has no multipart uploads", self.url)))?;
        let path = self.path(name);
        runtime().block_on(async {
            let id = mp.create_multipart(&path).await.map_err(|e| self.error("start uploading", name, e))?;
            let mut ids = Vec::new();
            for (i, part) in parts.enumerate() {
                let part = part.map_err(|e| StorageError(format!("cannot read what goes to `{name}`: {e}")))?;
                let p = mp
                    .put_part(&path, &id, i, PutPayload::from(part))
                    .await
                    .map_err(|e| self.error("upload", name, e))?;
                ids.push(p.content_id);
            }
            Ok((id, ids))
        })
    }

    /// Completes a staged upload: `name` becomes visible. Idempotent: an upload already
    /// completed (the object exists) is done.
    pub fn complete(&self, name: &str, upload: &str, parts: &[String]) -> StorageResult<()> {
        let mp =
            self.multipart.as_ref().ok_or_else(|| StorageError(format!("`{}` has no multipart uploads", self.url)))?;
        let path = self.path(name);
        let parts: Vec<PartId> = parts.iter().map(|p| PartId { content_id: p.clone() }).collect();
        let result = runtime().block_on(mp.complete_multipart(&path, &upload.to_string(), parts));
        match result {
            Ok(_) => Ok(()),
            Err(e) => match runtime().block_on(self.store.head(&path)) {
                Ok(_) => Ok(()),
                Err(_) => Err(self.error("complete", name, e)),
            },
        }
    }

    /// Deletes `name` (absent is fine).
    pub fn delete(&self, name: &str) -> StorageResult<()> {
        match runtime().block_on(self.store.delete(&self.path(name))) {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(self.error("delete", name, e)),
        }
    }

    /// Every object under the folder `dir` (relative names, with sizes), recursively.
    pub fn list(&self, dir: &str) -> StorageResult<Vec<(String, u64)>> {
        let base = self.path(dir);
        let strip = self.prefix.as_ref().len();
        runtime().block_on(async {
            let metas: Vec<object_store::ObjectMeta> = self
                .store
                .list(Some(&base))
                .try_collect()
                .await
                .map_err(|e| self.error("list", if dir.is_empty() { "." } else { dir }, e))?;
            Ok(metas
                .into_iter()
                .map(|m| {
                    let full = m.location.as_ref();
                    let rel = full.get(strip..).unwrap_or(full).trim_start_matches('/');
                    (rel.to_string(), m.size)
                })
                .collect())
        })
    }
}
