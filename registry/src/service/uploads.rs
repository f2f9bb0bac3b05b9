//! Blob upload sessions (spec.md "Pushing blobs"): POST, PATCH chunks, PUT to close, GET
//! status, DELETE to cancel, and the single-POST monolithic push.
//!
//! A session is the directory `_uploads/<id>/` in storage (`paths.rs`); the bytes received so
//! far are its `data` object, suspended between requests (`FileWriter::suspend`: on S3 an open
//! multipart upload) and sealed by the closing PUT; its written size is the session's offset.
//! A server restart therefore loses nothing: the running digest is kept in memory between
//! requests and saved beside the data (`hashstates/`) when a request ends, so a request on
//! another replica, or after a restart, continues it; lacking both (SHA-512 is not
//! resumable), the digest is recomputed from storage at PUT.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use bytes::Bytes;
use futures_util::StreamExt;
use oci::{Algorithm, Digest, Digester};

use super::{BodyStream, Registry};
use crate::error::{ErrorCode, RegistryError};
use crate::paths;
use crate::storage::{FileWriter, StorageDriver, StorageError};

/// A session's id and how many bytes it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadState {
    pub id: String,
    pub offset: u64,
}

/// An inclusive byte range from a `Content-Range` request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    pub start: u64,
    pub end: u64,
}

impl ChunkRange {
    /// Parses `start-end` as the spec requires (`^[0-9]+-[0-9]+$`); the `bytes ` prefix and
    /// `/total` suffix of RFC 9110 syntax are tolerated since some clients send them.
    pub fn parse(header: &str) -> Option<ChunkRange> {
        let s = header.trim();
        let s = s.strip_prefix("bytes ").unwrap_or(s);
        let s = s.split_once('/').map_or(s, |(range, _total)| range);
        let (start, end) = s.split_once('-')?;
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(start) || !digits(end) {
            return None;
        }
        let range = ChunkRange {
            start: start.parse().ok()?,
            end: end.parse().ok()?,
        };
        (range.start <= range.end).then_some(range)
    }

    /// Bytes in the range; never 0, since both ends are inclusive.
    pub fn byte_count(&self) -> u64 {
        self.end - self.start + 1
    }
}

/// The digest of a session's bytes so far, kept between requests to avoid rereading them.
pub(super) struct RunningDigest {
    offset: u64,
    algorithm: Algorithm,
    digester: Digester,
}

/// Upload ids are UUIDs (spec.md "POST then PUT": the location "MUST contain a UUID").
fn new_upload_id() -> String {
    let v = rand::random::<u128>();
    // Version 4, variant 1 bits.
    let v = (v & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Only ids we could have issued map to storage paths.
fn valid_upload_id(id: &str) -> bool {
    id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| {
            if [8, 13, 18, 23].contains(&i) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit() && !b.is_ascii_uppercase()
            }
        })
}

fn upload_unknown(id: &str) -> RegistryError {
    RegistryError::not_found(
        ErrorCode::BlobUploadUnknown,
        format!("upload {id} unknown to registry"),
    )
}

fn range_not_satisfiable(offset: u64, message: String) -> RegistryError {
    RegistryError::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        ErrorCode::BlobUploadInvalid,
        message,
    )
    .with_header("Range", range_header(offset))
}

/// `Range: 0-<last byte>`; distribution answers `0-0` for an empty session and clients expect it.
pub fn range_header(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

impl<S: StorageDriver> Registry<S> {
    /// Opens a session (end-4a). `algorithm` comes from `?digest-algorithm=` (end-4c).
    pub async fn start_upload(
        &self,
        name: &str,
        algorithm: Algorithm,
    ) -> Result<UploadState, RegistryError> {
        let id = new_upload_id();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.driver
            .put_content(
                &paths::upload_started_at(name, &id),
                Bytes::from(now.to_string()),
            )
            .await?;
        self.cache_digest(
            &id,
            RunningDigest {
                offset: 0,
                algorithm,
                digester: Digester::new(algorithm),
            },
        );
        Ok(UploadState { id, offset: 0 })
    }

    /// The session's offset (end-13), or BLOB_UPLOAD_UNKNOWN.
    pub async fn upload_status(&self, name: &str, id: &str) -> Result<UploadState, RegistryError> {
        if !valid_upload_id(id) || !self.exists(&paths::upload_started_at(name, id)).await? {
            return Err(upload_unknown(id));
        }
        let offset = match self
            .driver
            .written_size(&paths::upload_data(name, id))
            .await
        {
            Ok(size) => size,
            Err(e) if e.is_not_found() => 0,
            Err(e) => return Err(e.into()),
        };
        Ok(UploadState {
            id: id.to_string(),
            offset,
        })
    }

    /// Appends one chunk (end-5). Out-of-order or repeated chunks get 416 with the current range.
    pub async fn append_chunk(
        &self,
        name: &str,
        id: &str,
        range: Option<ChunkRange>,
        content_length: Option<u64>,
        body: impl BodyStream,
    ) -> Result<UploadState, RegistryError> {
        let lock = self.upload_lock(id);
        let _held = lock.lock().await;
        let state = self.upload_status(name, id).await?;
        check_chunk(&state, range, content_length)?;
        self.write_body(name, &state, body, false).await
    }

    /// Closes a session (end-6), with an optional final chunk, verifying the whole digest.
    pub async fn complete_upload(
        &self,
        name: &str,
        id: &str,
        digest: &Digest,
        range: Option<ChunkRange>,
        content_length: Option<u64>,
        body: impl BodyStream,
    ) -> Result<(), RegistryError> {
        let lock = self.upload_lock(id);
        let _held = lock.lock().await;
        let mut state = self.upload_status(name, id).await?;
        // A body is read unless the client declared it empty (chunked bodies have no length).
        if content_length != Some(0) {
            check_chunk(&state, range, content_length)?;
            state = self.write_body(name, &state, body, true).await?;
        } else {
            self.driver.seal(&paths::upload_data(name, id)).await?;
        }
        let algorithm = digest.algorithm();
        let computed = match self.running_digest(name, id, state.offset, algorithm).await {
            Some(r) if r.algorithm == algorithm => r.digester.finish(),
            _ => self.rehash_upload(name, id, algorithm).await?,
        };
        if computed != *digest {
            self.delete_if_present(&paths::upload_dir(name, id)).await?;
            return Err(RegistryError::bad_request(
                ErrorCode::DigestInvalid,
                format!("provided digest {digest} does not match uploaded content ({computed})"),
            ));
        }
        self.commit_blob(name, id, digest, state.offset).await
    }

    /// Pushes a whole blob in one request (end-4b, or POST then PUT without PATCH).
    pub async fn upload_monolithic(
        &self,
        name: &str,
        digest: &Digest,
        content_length: Option<u64>,
        body: impl BodyStream,
    ) -> Result<(), RegistryError> {
        let state = self.start_upload(name, digest.algorithm()).await?;
        let result = self
            .complete_upload(name, &state.id, digest, None, content_length, body)
            .await;
        if result.is_err() {
            self.forget_upload(&state.id);
            self.delete_if_present(&paths::upload_dir(name, &state.id))
                .await?;
        }
        result
    }

    /// Cancels a session (end-14).
    pub async fn cancel_upload(&self, name: &str, id: &str) -> Result<(), RegistryError> {
        let lock = self.upload_lock(id);
        let _held = lock.lock().await;
        self.upload_status(name, id).await?;
        self.forget_upload(id);
        self.delete_if_present(&paths::upload_dir(name, id)).await?;
        Ok(())
    }

    /// Removes sessions started longer than `age` ago (storage.maintenance.uploadpurging).
    /// Returns the sessions found stale; with `dry_run` they are only reported.
    pub async fn purge_uploads(
        &self,
        age: std::time::Duration,
        dry_run: bool,
    ) -> Result<Vec<String>, RegistryError> {
        let mut purged = Vec::new();
        let cutoff = SystemTime::now().checked_sub(age).unwrap_or(UNIX_EPOCH);
        for repo in self.repositories_holding(&["_uploads"]).await? {
            let ids = match self.driver.list(&paths::uploads_dir(&repo)).await {
                Ok(ids) => ids,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            for id in ids {
                let started = match self
                    .driver
                    .stat(&paths::upload_started_at(&repo, &id))
                    .await
                {
                    Ok(meta) => meta.modified,
                    // Without its state file the directory is either debris of a crash or a
                    // session being created right now: judge it by the directory's own age.
                    Err(e) if e.is_not_found() => {
                        match self.driver.stat(&paths::upload_dir(&repo, &id)).await {
                            Ok(meta) => meta.modified,
                            Err(e) if e.is_not_found() => continue,
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Err(e) => return Err(e.into()),
                };
                if started < cutoff {
                    if !dry_run {
                        self.forget_upload(&id);
                        self.delete_if_present(&paths::upload_dir(&repo, &id))
                            .await?;
                    }
                    purged.push(format!("{repo}/{id}"));
                }
            }
        }
        Ok(purged)
    }

    /// Streams a request body onto the session's data, hashing as it goes. The `last` body
    /// of a session leaves the data sealed, the others suspended.
    async fn write_body(
        &self,
        name: &str,
        state: &UploadState,
        mut body: impl BodyStream,
        last: bool,
    ) -> Result<UploadState, RegistryError> {
        let data_path = paths::upload_data(name, &state.id);
        // A session with no bytes yet starts a new object: there is nothing to continue (on S3
        // that saves reading back a part list and an object that do not exist).
        let mut writer = self.driver.writer(&data_path, state.offset > 0).await?;
        if writer.size() != state.offset {
            return Err(RegistryError::internal(format!(
                "upload {} changed size while locked ({} != {})",
                state.id,
                writer.size(),
                state.offset
            )));
        }
        // Saved by another replica, or by this one before a restart, it can only be SHA-256.
        let mut running = self
            .running_digest(name, &state.id, state.offset, Algorithm::Sha256)
            .await;
        let limit = self.settings.upload_max_bytes;
        let mut failure = None;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            if limit > 0 && writer.size() + chunk.len() as u64 > limit {
                let _ = writer.cancel().await;
                self.delete_if_present(&paths::upload_dir(name, &state.id))
                    .await?;
                return Err(over_upload_limit(limit));
            }
            if let Err(e) = writer.write(chunk.clone()).await {
                // What reached storage is unknown: drop the running digest, rehash at PUT.
                return Err(e.into());
            }
            if let Some(r) = running.as_mut() {
                r.digester.update(&chunk);
                r.offset += chunk.len() as u64;
            }
        }
        let offset = writer.size();
        // Whatever arrived is kept and made durable, so that a client whose connection broke
        // can ask for the offset (end-13) and resume from there.
        if last && failure.is_none() {
            writer.commit().await?;
        } else {
            writer.suspend().await?;
            if let Some(r) = running.as_ref().filter(|r| r.offset == offset) {
                self.save_digest(name, &state.id, r).await;
            }
        }
        if let Some(r) = running {
            self.cache_digest(&state.id, r);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(UploadState {
                id: state.id.clone(),
                offset,
            }),
        }
    }

    /// Moves verified bytes to their content address, links them, and ends the session.
    async fn commit_blob(
        &self,
        name: &str,
        id: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), RegistryError> {
        let blob = paths::blob_data(digest);
        // Identical content may already be stored (another push won the race): keep one copy.
        if !self.blob_stored(digest).await? {
            if size == 0 {
                self.driver.put_content(&blob, Bytes::new()).await?;
            } else {
                match self
                    .driver
                    .rename(&paths::upload_data(name, id), &blob)
                    .await
                {
                    Ok(()) => {}
                    Err(StorageError::NotFound(_)) => return Err(upload_unknown(id)),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.link_blob(name, digest).await?;
        self.forget_upload(id);
        self.delete_if_present(&paths::upload_dir(name, id)).await?;
        Ok(())
    }

    async fn rehash_upload(
        &self,
        name: &str,
        id: &str,
        algorithm: Algorithm,
    ) -> Result<Digest, RegistryError> {
        let mut digester = Digester::new(algorithm);
        match self
            .driver
            .reader(&paths::upload_data(name, id), 0, None)
            .await
        {
            Ok((_, mut stream)) => {
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk
                        .map_err(|e| RegistryError::internal(format!("reread upload {id}: {e}")))?;
                    digester.update(&chunk);
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        Ok(digester.finish())
    }

    /// Saves a running digest in storage, for the session's next request wherever it lands.
    /// Best effort: without it, that request's PUT rehashes the data.
    async fn save_digest(&self, name: &str, id: &str, running: &RunningDigest) {
        let Some(saved) = running.digester.save() else {
            return;
        };
        let path = paths::upload_hash_state(name, id, running.algorithm.name(), running.offset);
        if let Err(e) = self.driver.put_content(&path, Bytes::from(saved)).await {
            tracing::warn!(upload = id, error = %e, "saving an upload's running digest failed");
        }
    }

    /// The session's running digest at `offset`: this process's, or else the one a request
    /// saved in storage for `algorithm`.
    async fn running_digest(
        &self,
        name: &str,
        id: &str,
        offset: u64,
        algorithm: Algorithm,
    ) -> Option<RunningDigest> {
        if let Some(cached) = self.take_running_digest(id, offset) {
            return Some(cached);
        }
        let path = paths::upload_hash_state(name, id, algorithm.name(), offset);
        let saved = self.driver.get_content(&path).await.ok()?;
        Some(RunningDigest {
            offset,
            algorithm,
            digester: Digester::restore(algorithm, &saved)?,
        })
    }

    fn cache_digest(&self, id: &str, running: RunningDigest) {
        let mut map = self
            .upload_hashers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.insert(id.to_string(), running);
    }

    /// The cached running digest if it covers exactly `offset` bytes; a fresh one at offset 0.
    fn take_running_digest(&self, id: &str, offset: u64) -> Option<RunningDigest> {
        let cached = {
            let mut map = self
                .upload_hashers
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            map.remove(id)
        };
        match cached {
            Some(r) if r.offset == offset => Some(r),
            Some(r) if offset == 0 => Some(RunningDigest {
                offset: 0,
                algorithm: r.algorithm,
                digester: Digester::new(r.algorithm),
            }),
            None if offset == 0 => Some(RunningDigest {
                offset: 0,
                algorithm: Algorithm::Sha256,
                digester: Digester::new(Algorithm::Sha256),
            }),
            _ => None,
        }
    }

    fn forget_upload(&self, id: &str) {
        let mut map = self
            .upload_hashers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.remove(id);
    }
}

/// Checks a chunk's `Content-Range` and `Content-Length` against the session's offset.
fn check_chunk(
    state: &UploadState,
    range: Option<ChunkRange>,
    content_length: Option<u64>,
) -> Result<(), RegistryError> {
    if let Some(range) = range {
        if range.start != state.offset {
            return Err(range_not_satisfiable(
                state.offset,
                format!(
                    "chunk starts at {} but the upload holds {} bytes",
                    range.start, state.offset
                ),
            ));
        }
        if let Some(len) = content_length {
            if len != range.byte_count() {
                return Err(RegistryError::bad_request(
                    ErrorCode::SizeInvalid,
                    format!(
                        "Content-Length {len} does not match Content-Range {}-{}",
                        range.start, range.end
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// SIZE_INVALID for a blob larger than `http.uploadmaxbytes`, however it arrives.
pub(super) fn over_upload_limit(limit: u64) -> RegistryError {
    RegistryError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::SizeInvalid,
        format!("blob exceeds the upload limit of {limit} bytes (http.uploadmaxbytes)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            ChunkRange::parse("0-99"),
            Some(ChunkRange { start: 0, end: 99 })
        );
        assert_eq!(
            ChunkRange::parse("bytes 5-9/*"),
            Some(ChunkRange { start: 5, end: 9 })
        );
        assert_eq!(ChunkRange::parse("9-5"), None);
        assert_eq!(ChunkRange::parse("-5"), None);
        assert_eq!(ChunkRange::parse("a-b"), None);
    }

    #[test]
    fn upload_ids_are_uuids() {
        let id = new_upload_id();
        assert!(valid_upload_id(&id), "{id}");
        assert_eq!(&id[14..15], "4");
        assert!(!valid_upload_id("../../etc"));
    }
}
