//! The S3 writer: bytes gather into parts of `chunksize` that go out as S3 multipart parts,
//! several at a time, while the request body keeps streaming in. `commit` completes the
//! multipart upload (or, for an object smaller than one part, sends it in one PUT), and S3
//! makes the whole object visible at once: nobody ever sees a half-written object.
//!
//! Between requests nothing lives in memory: a committed writer's bytes are the object itself,
//! so an upload session resumed on another replica (or after a crash) continues from the
//! object's size. Appending starts a new multipart upload whose first bytes are the existing
//! object's, streamed back through the writer (object_store has no UploadPartCopy). A writer
//! dropped without `commit` aborts its multipart upload; an abort lost to a crash leaves
//! only invisible parts for the bucket's `AbortIncompleteMultipartUpload` lifecycle rule.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::AmazonS3;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{MultipartId, ObjectStore, PutPayload};
use tokio::task::JoinHandle;

use super::storage_error;
use crate::storage::{FileWriter, StorageError, StorageResult};

/// Parts uploading at once per writer: enough to keep S3 busy while the client sends the
/// next part, bounded so one upload holds at most this many parts in memory.
const PARTS_IN_FLIGHT: usize = 4;

pub struct S3Writer {
    store: Arc<AmazonS3>,
    key: Path,
    /// The driver path, for errors.
    path: String,
    chunk_size: usize,
    pending: Vec<Bytes>,
    pending_len: usize,
    size: u64,
    multipart: Option<Multipart>,
}

struct Multipart {
    id: MultipartId,
    next_index: usize,
    /// Parts being uploaded, oldest first; their results join `done` in order.
    in_flight: VecDeque<JoinHandle<object_store::Result<PartId>>>,
    done: Vec<PartId>,
}

impl S3Writer {
    pub(super) fn new(store: Arc<AmazonS3>, key: Path, path: String, chunk_size: usize) -> Self {
        S3Writer {
            store,
            key,
            path,
            chunk_size,
            pending: Vec::new(),
            pending_len: 0,
            size: 0,
            multipart: None,
        }
    }

    fn take_pending(&mut self) -> PutPayload {
        self.pending_len = 0;
        std::mem::take(&mut self.pending).into_iter().collect()
    }

    /// Sends the pending bytes as the next part, starting the multipart upload at the first.
    async fn send_part(&mut self) -> StorageResult<()> {
        let payload = self.take_pending();
        let mut mp = match self.multipart.take() {
            Some(mp) => mp,
            None => Multipart {
                id: self
                    .store
                    .create_multipart(&self.key)
                    .await
                    .map_err(|e| storage_error(&self.path, e))?,
                next_index: 0,
                in_flight: VecDeque::new(),
                done: Vec::new(),
            },
        };
        let started = self.start_part(&mut mp, payload).await;
        // Kept even after a failure, so that Drop aborts it.
        self.multipart = Some(mp);
        started
    }

    /// Starts uploading one part, waiting first while `PARTS_IN_FLIGHT` are on their way.
    async fn start_part(&self, mp: &mut Multipart, payload: PutPayload) -> StorageResult<()> {
        while mp.in_flight.len() >= PARTS_IN_FLIGHT {
            wait_oldest(mp, &self.path).await?;
        }
        let (store, key, id, index) = (
            self.store.clone(),
            self.key.clone(),
            mp.id.clone(),
            mp.next_index,
        );
        mp.next_index += 1;
        mp.in_flight.push_back(tokio::spawn(async move {
            store.put_part(&key, &id, index, payload).await
        }));
        Ok(())
    }

    async fn finish(&mut self) -> StorageResult<()> {
        let Some(mut mp) = self.multipart.take() else {
            // Smaller than one part: a single PUT, atomic like a multipart completion.
            let payload = self.take_pending();
            return self
                .store
                .put(&self.key, payload)
                .await
                .map(|_| ())
                .map_err(|e| storage_error(&self.path, e));
        };
        let completed = self.complete(&mut mp).await;
        if completed.is_err() {
            abort(self.store.clone(), self.key.clone(), mp).await;
        }
        completed
    }

    /// Sends the last part, waits for all, and completes: the object appears whole.
    async fn complete(&mut self, mp: &mut Multipart) -> StorageResult<()> {
        if self.pending_len > 0 {
            let payload = self.take_pending();
            self.start_part(mp, payload).await?;
        }
        while !mp.in_flight.is_empty() {
            wait_oldest(mp, &self.path).await?;
        }
        self.store
            .complete_multipart(&self.key, &mp.id, std::mem::take(&mut mp.done))
            .await
            .map(|_| ())
            .map_err(|e| storage_error(&self.path, e))
    }
}

async fn wait_oldest(mp: &mut Multipart, path: &str) -> StorageResult<()> {
    let Some(handle) = mp.in_flight.pop_front() else {
        return Ok(());
    };
    let part = handle
        .await
        .map_err(|join| StorageError::Backend {
            path: path.to_string(),
            source: Box::new(join),
        })?
        .map_err(|e| storage_error(path, e))?;
    mp.done.push(part);
    Ok(())
}

impl FileWriter for S3Writer {
    async fn write(&mut self, data: Bytes) -> StorageResult<()> {
        self.size += data.len() as u64;
        self.pending_len += data.len();
        self.pending.push(data);
        if self.pending_len >= self.chunk_size {
            self.send_part().await?;
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn commit(mut self) -> StorageResult<()> {
        self.finish().await
    }

    async fn cancel(mut self) -> StorageResult<()> {
        if let Some(mp) = self.multipart.take() {
            abort(self.store.clone(), self.key.clone(), mp).await;
        }
        self.store
            .delete(&self.key)
            .await
            .map_err(|e| storage_error(&self.path, e))
    }
}

/// Stops the parts still uploading and discards those uploaded; best effort, since parts of
/// an upload never completed are invisible anyway.
async fn abort(store: Arc<AmazonS3>, key: Path, mp: Multipart) {
    for part in &mp.in_flight {
        part.abort();
    }
    if let Err(e) = store.abort_multipart(&key, &mp.id).await {
        tracing::warn!(key = %key, error = %e, "abort of an S3 multipart upload failed");
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        // Dropped mid-write (a failed request): abort in the background.
        if let Some(mp) = self.multipart.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(abort(self.store.clone(), self.key.clone(), mp));
            }
        }
    }
}
