//! The S3 writer: bytes gather into parts of `chunksize` that go out as S3 multipart parts,
//! several at a time, while the request body keeps streaming in. `commit` completes the
//! multipart upload (or, for an object smaller than one part, sends it in one PUT), and S3
//! makes the whole object visible at once: nobody ever sees a half-written object.
//!
//! An upload session's chunks come in separate requests, perhaps to different replicas. Between
//! two of them `suspend` leaves the multipart upload open and stores its state in the bucket
//! beside the key: `<key>.parts` ([`StoredParts`]: the upload id, the ETags of the parts sent,
//! the size) and `<key>.tail-<size>`, the bytes after the last whole part (S3 refuses parts
//! under 5 MiB but the last). An appending writer, on any replica, reads both and goes on with
//! the next part number; `seal` or `commit` completes the upload. So every byte goes to S3
//! once (a tail at most once more), however many chunks the client sends.
//!
//! Appending to a committed object (one without `.parts`) streams its bytes back through the
//! writer as the first parts of a new upload (object_store has no UploadPartCopy); upload
//! sessions never do that.
//!
//! A writer dropped without `commit` or `suspend` (a failed request) aborts a multipart upload
//! it started itself; a stored one stays for the next writer, which sends the lost part
//! numbers again. Deleting a suspended key, or its directory, aborts its upload
//! ([`abort_stored`]); an abort lost to a crash leaves only invisible parts, for the bucket's
//! `AbortIncompleteMultipartUpload` lifecycle rule.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{MultipartId, ObjectStore, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::storage_error;
use crate::storage::{FileWriter, StorageError, StorageResult};

/// Parts uploading at once per writer: enough to keep S3 busy while the client sends the
/// next part, bounded so one upload holds at most this many parts in memory.
const PARTS_IN_FLIGHT: usize = 4;

/// What `suspend` stores at `<key>.parts`: enough for any replica to continue the upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredParts {
    /// The multipart upload; none while every byte is still in the tail.
    upload_id: Option<MultipartId>,
    /// The ETags of parts 1..=n, in order.
    parts: Vec<String>,
    /// Bytes written: the parts' and then the tail's.
    pub(super) size: u64,
    /// Bytes in `<key>.tail-<size>`.
    tail: u64,
}

/// The suffix of a key's stored state, `<key>.parts`.
pub(super) const PARTS_SUFFIX: &str = ".parts";

pub(super) fn parts_key(key: &Path) -> Path {
    Path::from(format!("{key}{PARTS_SUFFIX}"))
}

fn tail_key(key: &Path, size: u64) -> Path {
    Path::from(format!("{key}.tail-{size}"))
}

/// The keys a suspended upload keeps beside its own.
fn stored_keys(key: &Path, stored: &StoredParts) -> Vec<Path> {
    let mut keys = vec![parts_key(key)];
    if stored.tail > 0 {
        keys.push(tail_key(key, stored.size));
    }
    keys
}

/// The state `suspend` stored for `key`, if any.
pub(super) async fn read_stored(
    store: &AmazonS3,
    key: &Path,
    path: &str,
) -> StorageResult<Option<StoredParts>> {
    let bytes = match store.get(&parts_key(key)).await {
        Ok(got) => got.bytes().await.map_err(|e| storage_error(path, e))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(storage_error(path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StorageError::Backend {
            path: path.to_string(),
            source: format!("unreadable multipart state {}: {e}", parts_key(key)).into(),
        })
}

/// Aborts the multipart upload stored at `parts` (a `<key>.parts` about to be deleted) and
/// returns the other key it kept, the tail. Best effort: an upload that is not aborted only
/// holds invisible parts.
pub(super) async fn abort_stored(store: &AmazonS3, parts: &Path) -> Option<Path> {
    let key = Path::from(parts.as_ref().strip_suffix(PARTS_SUFFIX)?);
    let stored = match read_stored(store, &key, parts.as_ref()).await {
        Ok(Some(stored)) => stored,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(key = %parts, error = %e, "reading a stored S3 multipart upload failed");
            return None;
        }
    };
    if let Some(id) = &stored.upload_id {
        if let Err(e) = store.abort_multipart(&key, id).await {
            tracing::warn!(key = %key, error = %e, "abort of an S3 multipart upload failed");
        }
    }
    (stored.tail > 0).then(|| tail_key(&key, stored.size))
}

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
    /// The state this writer was resumed from: its keys go when the writer commits, and its
    /// tail is replaced when it suspends.
    resumed_from: Option<StoredParts>,
}

struct Multipart {
    id: MultipartId,
    next_index: usize,
    /// Parts being uploaded, oldest first; their results join `done` in order.
    in_flight: VecDeque<JoinHandle<object_store::Result<PartId>>>,
    done: Vec<PartId>,
    /// A `<key>.parts` names this upload, so a failed writer must leave it for the next one.
    stored: bool,
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
            resumed_from: None,
        }
    }

    /// Continues the upload that `suspend` stored for the key (read by [`read_stored`]).
    pub(super) async fn resume(
        store: Arc<AmazonS3>,
        key: Path,
        path: String,
        chunk_size: usize,
        stored: StoredParts,
    ) -> StorageResult<S3Writer> {
        let mut writer = S3Writer::new(store, key, path, chunk_size);
        if stored.tail > 0 {
            let tail = writer
                .store
                .get(&tail_key(&writer.key, stored.size))
                .await
                .map_err(|e| storage_error(&writer.path, e))?
                .bytes()
                .await
                .map_err(|e| storage_error(&writer.path, e))?;
            if tail.len() as u64 != stored.tail {
                return Err(StorageError::Backend {
                    path: writer.path.clone(),
                    source: format!(
                        "the stored tail has {} bytes, its state says {}",
                        tail.len(),
                        stored.tail
                    )
                    .into(),
                });
            }
            writer.pending_len = tail.len();
            writer.pending.push(tail);
        }
        writer.size = stored.size;
        writer.multipart = stored.upload_id.clone().map(|id| Multipart {
            id,
            next_index: stored.parts.len(),
            in_flight: VecDeque::new(),
            done: stored
                .parts
                .iter()
                .map(|etag| PartId {
                    content_id: etag.clone(),
                })
                .collect(),
            stored: true,
        });
        writer.resumed_from = Some(stored);
        Ok(writer)
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
                stored: false,
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
        match self.multipart.take() {
            // Smaller than one part: a single PUT, atomic like a multipart completion.
            None => {
                let payload = self.take_pending();
                self.store
                    .put(&self.key, payload)
                    .await
                    .map_err(|e| storage_error(&self.path, e))?;
            }
            Some(mut mp) => {
                let completed = self.complete(&mut mp).await;
                if completed.is_err() && !mp.stored {
                    abort(self.store.clone(), self.key.clone(), mp).await;
                }
                completed?;
            }
        }
        // The object is whole; the state it was resumed from is spent.
        if let Some(stored) = self.resumed_from.take() {
            forget_stored(&self.store, &self.key, &stored, &self.path).await?;
        }
        Ok(())
    }

    /// Sends the last part, waits for all, and completes: the object appears whole.
    async fn complete(&mut self, mp: &mut Multipart) -> StorageResult<()> {
        if self.pending_len > 0 {
            let payload = self.take_pending();
            self.start_part(mp, payload).await?;
        }
        self.wait_all(mp).await?;
        self.store
            .complete_multipart(&self.key, &mp.id, mp.done.clone())
            .await
            .map(|_| ())
            .map_err(|e| storage_error(&self.path, e))
    }

    async fn wait_all(&self, mp: &mut Multipart) -> StorageResult<()> {
        while !mp.in_flight.is_empty() {
            wait_oldest(mp, &self.path).await?;
        }
        Ok(())
    }

    /// Waits for the parts on their way, then stores the tail and the part list. The tail's
    /// key names the size, so the old state and its tail stay whole until the new state
    /// replaces them in one PUT.
    async fn store_state(&mut self) -> StorageResult<()> {
        if let Some(mut mp) = self.multipart.take() {
            let waited = self.wait_all(&mut mp).await;
            self.multipart = Some(mp);
            waited?;
        }
        let upload = self.multipart.as_ref();
        let stored = StoredParts {
            upload_id: upload.map(|mp| mp.id.clone()),
            parts: upload.map_or_else(Vec::new, |mp| {
                mp.done.iter().map(|p| p.content_id.clone()).collect()
            }),
            size: self.size,
            tail: self.pending_len as u64,
        };
        if self.pending_len > 0 {
            let tail: PutPayload = self.pending.iter().cloned().collect();
            self.store
                .put(&tail_key(&self.key, self.size), tail)
                .await
                .map_err(|e| storage_error(&self.path, e))?;
        }
        let json = serde_json::to_vec(&stored).expect("StoredParts serializes");
        self.store
            .put(&parts_key(&self.key), json.into())
            .await
            .map_err(|e| storage_error(&self.path, e))?;
        if let Some(mp) = self.multipart.as_mut() {
            mp.stored = true;
        }
        // The previous tail is superseded, unless this writer added nothing (the same key).
        if let Some(old) = self.resumed_from.take() {
            if old.tail > 0 && old.size != self.size {
                let old_tail = vec![tail_key(&self.key, old.size)];
                let _ = delete_keys(&self.store, old_tail, &self.path).await;
            }
        }
        Ok(())
    }
}

/// Removes the keys a spent state kept beside `key`.
pub(super) async fn forget_stored(
    store: &AmazonS3,
    key: &Path,
    stored: &StoredParts,
    path: &str,
) -> StorageResult<()> {
    delete_keys(store, stored_keys(key, stored), path).await
}

async fn delete_keys(store: &AmazonS3, keys: Vec<Path>, path: &str) -> StorageResult<()> {
    let keys = futures_util::stream::iter(keys.into_iter().map(Ok)).boxed();
    store
        .delete_stream(keys)
        .try_collect::<Vec<_>>()
        .await
        .map(|_| ())
        .map_err(|e| storage_error(path, e))
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

    async fn suspend(mut self) -> StorageResult<()> {
        self.store_state().await
    }

    async fn cancel(mut self) -> StorageResult<()> {
        if let Some(mp) = self.multipart.take() {
            abort(self.store.clone(), self.key.clone(), mp).await;
        }
        let mut doomed = vec![self.key.clone()];
        if let Some(stored) = self.resumed_from.take() {
            doomed.extend(stored_keys(&self.key, &stored));
        }
        delete_keys(&self.store, doomed, &self.path).await
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
        // Dropped mid-write (a failed request): abort in the background, unless a stored
        // state names the upload for the next writer.
        if let Some(mp) = self.multipart.take().filter(|mp| !mp.stored) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(abort(self.store.clone(), self.key.clone(), mp));
            }
        }
    }
}
