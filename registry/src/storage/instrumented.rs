//! A `StorageDriver` wrapper that times every operation into [`Metrics`], so every backend
//! (filesystem, S3, …) reports storage latency without code of its own. Reads are timed to
//! the opened stream, not to its last byte: the HTTP byte counters cover the transfer.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::{ByteStream, FileWriter, Metadata, StorageDriver, StorageError, StorageResult};
use crate::metrics::Metrics;

/// The operations of the driver trait, as the `op` label of the storage metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageOp {
    GetContent,
    PutContent,
    Reader,
    Writer,
    Write,
    Commit,
    Suspend,
    Cancel,
    Stat,
    Seal,
    List,
    Rename,
    Delete,
    Adopt,
}

impl StorageOp {
    pub const ALL: [StorageOp; 14] = [
        StorageOp::GetContent,
        StorageOp::PutContent,
        StorageOp::Reader,
        StorageOp::Writer,
        StorageOp::Write,
        StorageOp::Commit,
        StorageOp::Suspend,
        StorageOp::Cancel,
        StorageOp::Stat,
        StorageOp::Seal,
        StorageOp::List,
        StorageOp::Rename,
        StorageOp::Delete,
        StorageOp::Adopt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StorageOp::GetContent => "get_content",
            StorageOp::PutContent => "put_content",
            StorageOp::Reader => "reader",
            StorageOp::Writer => "writer",
            StorageOp::Write => "write",
            StorageOp::Commit => "commit",
            StorageOp::Suspend => "suspend",
            StorageOp::Cancel => "cancel",
            StorageOp::Stat => "stat",
            StorageOp::Seal => "seal",
            StorageOp::List => "list",
            StorageOp::Rename => "rename",
            StorageOp::Delete => "delete",
            StorageOp::Adopt => "adopt",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Times `op`; a NotFound is an answer (existence checks), not a storage error.
async fn timed<T>(
    metrics: &Metrics,
    op: StorageOp,
    fut: impl Future<Output = StorageResult<T>>,
) -> StorageResult<T> {
    let started = Instant::now();
    let result = fut.await;
    let failed = matches!(&result, Err(e) if !matches!(e, StorageError::NotFound(_)));
    metrics.observe_storage(op, started.elapsed(), failed);
    result
}

pub struct Instrumented<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S: StorageDriver> Instrumented<S> {
    pub fn new(inner: S, metrics: Arc<Metrics>) -> Self {
        Instrumented { inner, metrics }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: StorageDriver> StorageDriver for Instrumented<S> {
    type Writer = InstrumentedWriter<S::Writer>;

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn get_content(&self, path: &str) -> StorageResult<Bytes> {
        timed(
            &self.metrics,
            StorageOp::GetContent,
            self.inner.get_content(path),
        )
        .await
    }

    async fn put_content(&self, path: &str, content: Bytes) -> StorageResult<()> {
        timed(
            &self.metrics,
            StorageOp::PutContent,
            self.inner.put_content(path, content),
        )
        .await
    }

    async fn reader(
        &self,
        path: &str,
        offset: u64,
        len: Option<u64>,
    ) -> StorageResult<(u64, ByteStream)> {
        timed(
            &self.metrics,
            StorageOp::Reader,
            self.inner.reader(path, offset, len),
        )
        .await
    }

    async fn writer(&self, path: &str, append: bool) -> StorageResult<Self::Writer> {
        let inner = timed(
            &self.metrics,
            StorageOp::Writer,
            self.inner.writer(path, append),
        )
        .await?;
        Ok(InstrumentedWriter {
            inner,
            metrics: self.metrics.clone(),
        })
    }

    async fn stat(&self, path: &str) -> StorageResult<Metadata> {
        timed(&self.metrics, StorageOp::Stat, self.inner.stat(path)).await
    }

    async fn written_size(&self, path: &str) -> StorageResult<u64> {
        timed(
            &self.metrics,
            StorageOp::Stat,
            self.inner.written_size(path),
        )
        .await
    }

    async fn seal(&self, path: &str) -> StorageResult<()> {
        timed(&self.metrics, StorageOp::Seal, self.inner.seal(path)).await
    }

    async fn list(&self, path: &str) -> StorageResult<Vec<String>> {
        timed(&self.metrics, StorageOp::List, self.inner.list(path)).await
    }

    async fn rename(&self, from: &str, to: &str) -> StorageResult<()> {
        timed(
            &self.metrics,
            StorageOp::Rename,
            self.inner.rename(from, to),
        )
        .await
    }

    async fn delete(&self, path: &str) -> StorageResult<()> {
        timed(&self.metrics, StorageOp::Delete, self.inner.delete(path)).await
    }

    // Not timed: opening a local file is not a storage request.
    fn local_temp_file(&self) -> std::io::Result<Option<std::fs::File>> {
        self.inner.local_temp_file()
    }

    async fn adopt_file(&self, file: &std::fs::File, path: &str) -> StorageResult<()> {
        timed(
            &self.metrics,
            StorageOp::Adopt,
            self.inner.adopt_file(file, path),
        )
        .await
    }

    // Not timed: presigning is local work, not a storage request.
    async fn redirect_url(
        &self,
        path: &str,
        method: &axum::http::Method,
    ) -> StorageResult<Option<String>> {
        self.inner.redirect_url(path, method).await
    }
}

pub struct InstrumentedWriter<W> {
    inner: W,
    metrics: Arc<Metrics>,
}

impl<W: FileWriter> FileWriter for InstrumentedWriter<W> {
    async fn write(&mut self, data: Bytes) -> StorageResult<()> {
        timed(&self.metrics, StorageOp::Write, self.inner.write(data)).await
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }

    async fn commit(self) -> StorageResult<()> {
        timed(&self.metrics, StorageOp::Commit, self.inner.commit()).await
    }

    async fn suspend(self) -> StorageResult<()> {
        timed(&self.metrics, StorageOp::Suspend, self.inner.suspend()).await
    }

    async fn cancel(self) -> StorageResult<()> {
        timed(&self.metrics, StorageOp::Cancel, self.inner.cancel()).await
    }
}
