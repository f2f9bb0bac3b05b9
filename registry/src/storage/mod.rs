//! The storage seam: a small driver trait in the spirit of distribution's
//! `registry/storage/driver/storagedriver.go`, and the one test suite every backend must pass
//! ([`testsuite`]).
//!
//! Paths are `/`-separated keys relative to the driver's root (`docker/registry/v2/blobs/…`), so
//! that an object store can implement the same trait: streaming ranged reads, streaming writes
//! that become durable on `commit`, atomic `rename` (a copy + delete on object stores), listing
//! and recursive delete. The registry keeps nothing a request needs only in memory: everything
//! goes through this trait (see `paths.rs` for what lives where).

pub mod filesystem;
pub mod instrumented;
pub mod s3;
pub mod testsuite;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::Stream;

/// A streamed object body.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("path not found: {0}")]
    NotFound(String),
    #[error("invalid storage path {0:?}")]
    InvalidPath(String),
    #[error("offset {offset} is beyond the end of {path} ({size} bytes)")]
    InvalidOffset {
        path: String,
        offset: u64,
        size: u64,
    },
    #[error("storage I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    /// A remote backend (S3) failed, after its retries.
    #[error("storage backend request on {path:?}: {source}")]
    Backend {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StorageError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound(_))
    }
}

pub type StorageResult<T> = Result<T, StorageError>;

/// What `stat` reports about a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    pub size: u64,
    pub is_dir: bool,
    pub modified: SystemTime,
}

/// A streaming writer to one path. Bytes written are not guaranteed durable until `commit`;
/// `cancel` removes everything this writer's path holds.
pub trait FileWriter: Send {
    fn write(&mut self, data: Bytes) -> impl Future<Output = StorageResult<()>> + Send;
    /// Bytes in the object so far, including what was there before an appending open.
    fn size(&self) -> u64;
    /// Makes the written bytes durable (fsync on a filesystem) and readable at the path.
    fn commit(self) -> impl Future<Output = StorageResult<()>> + Send;
    /// Makes the written bytes durable for an appending `writer` on the same path, in this
    /// process or another, to continue: an upload session between two chunks. The path need
    /// not be readable until [`StorageDriver::seal`]; its size is
    /// [`StorageDriver::written_size`]. On a filesystem this is `commit`; on S3 the multipart
    /// upload stays open and its part list is stored (s3/writer.rs).
    fn suspend(self) -> impl Future<Output = StorageResult<()>> + Send
    where
        Self: Sized,
    {
        self.commit()
    }
    fn cancel(self) -> impl Future<Output = StorageResult<()>> + Send;
}

pub trait StorageDriver: Send + Sync + 'static {
    type Writer: FileWriter;

    /// A short name for logs ("filesystem").
    fn name(&self) -> &'static str;

    /// Reads a whole (small) object: links, manifests, upload state.
    fn get_content(&self, path: &str) -> impl Future<Output = StorageResult<Bytes>> + Send;

    /// Replaces an object atomically: readers see the old or the new content, never a mix,
    /// and the new content is durable when this returns.
    fn put_content(
        &self,
        path: &str,
        content: Bytes,
    ) -> impl Future<Output = StorageResult<()>> + Send;

    /// Streams `len` bytes (to the end when `None`) from `offset`. Returns the object's total
    /// size beside the stream so that one open serves both the headers and the body.
    fn reader(
        &self,
        path: &str,
        offset: u64,
        len: Option<u64>,
    ) -> impl Future<Output = StorageResult<(u64, ByteStream)>> + Send;

    /// Opens a writer; `append` continues an existing object (a resumed upload), otherwise
    /// the object is truncated.
    fn writer(
        &self,
        path: &str,
        append: bool,
    ) -> impl Future<Output = StorageResult<Self::Writer>> + Send;

    fn stat(&self, path: &str) -> impl Future<Output = StorageResult<Metadata>> + Send;

    /// The bytes at `path` so far, whether suspended ([`FileWriter::suspend`]) or committed.
    fn written_size(&self, path: &str) -> impl Future<Output = StorageResult<u64>> + Send {
        async move { self.stat(path).await.map(|meta| meta.size) }
    }

    /// Turns suspended bytes at `path` into an ordinary object that can be read and renamed;
    /// nothing to do for a committed object or none.
    fn seal(&self, _path: &str) -> impl Future<Output = StorageResult<()>> + Send {
        async { Ok(()) }
    }

    /// The names (not paths) of the direct children of a directory, unsorted.
    fn list(&self, path: &str) -> impl Future<Output = StorageResult<Vec<String>>> + Send;

    /// Moves an object into place atomically, replacing any object at `to`.
    fn rename(&self, from: &str, to: &str) -> impl Future<Output = StorageResult<()>> + Send;

    /// Deletes an object or a whole directory tree.
    fn delete(&self, path: &str) -> impl Future<Output = StorageResult<()>> + Send;

    /// A nameless temporary file on the storage's own filesystem, for bytes that will be
    /// placed with [`StorageDriver::adopt_file`] without being copied: the mirror spools its
    /// downloads in one (proxy/fill.rs). `None` (the default: object stores, or a filesystem
    /// without `O_TMPFILE`) when the driver has none; callers then stream through a `writer`.
    fn local_temp_file(&self) -> io::Result<Option<std::fs::File>> {
        Ok(None)
    }

    /// Makes a file from [`StorageDriver::local_temp_file`] durable and gives it the name
    /// `path` atomically. An object already at `path` is kept: callers adopt content-addressed
    /// blobs, so it holds the same bytes.
    fn adopt_file(
        &self,
        _file: &std::fs::File,
        path: &str,
    ) -> impl Future<Output = StorageResult<()>> + Send {
        let path = path.to_string();
        async move {
            Err(StorageError::Io {
                path,
                source: io::Error::from(io::ErrorKind::Unsupported),
            })
        }
    }

    /// A URL a client can send `method` (GET or HEAD) to for the object's bytes without going
    /// through the registry, as distribution's `URLFor`: a presigned URL on S3. `None` (the
    /// default: the filesystem) means the registry serves the bytes itself.
    fn redirect_url(
        &self,
        _path: &str,
        _method: &axum::http::Method,
    ) -> impl Future<Output = StorageResult<Option<String>>> + Send {
        async { Ok(None) }
    }
}

/// Rejects keys that could escape the root or alias another key: empty segments, `.`, `..`.
pub fn check_path(path: &str) -> StorageResult<()> {
    let bad = path.is_empty()
        || path
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == ".." || seg.contains('\0'));
    if bad {
        return Err(StorageError::InvalidPath(path.to_string()));
    }
    Ok(())
}
