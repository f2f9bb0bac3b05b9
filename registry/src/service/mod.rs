//! The registry's operations, independent of HTTP: blobs, upload sessions, manifests and
//! tags, referrers and the catalog. Every method answers with the spec's error codes.
//!
//! State lives in storage (`paths.rs`); the only in-memory state is caches that any replica
//! can rebuild: upload digest states (rehashed from storage when missing) and manifest bytes
//! by digest (immutable, so never stale). Per-upload locks serialise requests to one session
//! on this replica.

mod blobs;
mod listing;
mod manifests;
mod uploads;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use futures_util::Stream;
use oci::Digest;

use crate::error::{ErrorCode, RegistryError};
use crate::storage::{StorageDriver, StorageError, StorageResult};

pub use listing::Page;
pub use manifests::{ManifestBody, PutManifest};
pub use uploads::{range_header, ChunkRange, UploadState};

/// A request body as the service sees it: chunks, or an error (a stalled or broken client).
pub trait BodyStream: Stream<Item = Result<Bytes, RegistryError>> + Send + Unpin {}
impl<T: Stream<Item = Result<Bytes, RegistryError>> + Send + Unpin> BodyStream for T {}

/// The policy knobs the services enforce (from `config::Config`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub delete_enabled: bool,
    /// 0 means no limit.
    pub upload_max_bytes: u64,
}

pub struct Registry<S: StorageDriver> {
    driver: S,
    settings: Settings,
    upload_hashers: Mutex<HashMap<String, uploads::RunningDigest>>,
    upload_locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    manifest_cache: manifests::ManifestCache,
}

impl<S: StorageDriver> Registry<S> {
    pub fn new(driver: S, settings: Settings) -> Self {
        Registry {
            driver,
            settings,
            upload_hashers: Mutex::new(HashMap::new()),
            upload_locks: Mutex::new(HashMap::new()),
            manifest_cache: manifests::ManifestCache::default(),
        }
    }

    pub fn driver(&self) -> &S {
        &self.driver
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether anything exists at `path`.
    async fn exists(&self, path: &str) -> Result<bool, RegistryError> {
        match self.driver.stat(path).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads a link file: the digest it holds, or `None` when the link is absent.
    async fn read_link(&self, path: &str) -> Result<Option<Digest>, RegistryError> {
        match self.driver.get_content(path).await {
            Ok(bytes) => {
                let text = std::str::from_utf8(&bytes)
                    .map_err(|_| RegistryError::internal(format!("corrupt link {path}")))?;
                let digest = text
                    .trim()
                    .parse()
                    .map_err(|e| RegistryError::internal(format!("corrupt link {path}: {e}")))?;
                Ok(Some(digest))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn write_link(&self, path: &str, digest: &Digest) -> Result<(), RegistryError> {
        self.driver
            .put_content(path, Bytes::copy_from_slice(digest.as_str().as_bytes()))
            .await?;
        Ok(())
    }

    /// Deletes `path`, treating an already-absent path as done.
    async fn delete_if_present(&self, path: &str) -> StorageResult<()> {
        match self.driver.delete(path).await {
            Err(StorageError::NotFound(_)) => Ok(()),
            other => other,
        }
    }

    async fn repository_exists(&self, name: &str) -> Result<bool, RegistryError> {
        self.exists(&crate::paths::repository(name)).await
    }

    fn delete_allowed(&self) -> Result<(), RegistryError> {
        if self.settings.delete_enabled {
            Ok(())
        } else {
            Err(RegistryError::delete_disabled())
        }
    }

    /// The lock that serialises requests to one upload session on this replica.
    fn upload_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.upload_locks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lock) = locks.get(id).and_then(Weak::upgrade) {
            return lock;
        }
        // Dropped sessions leave dead weak entries; sweep them while we hold the map.
        locks.retain(|_, w| w.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(id.to_string(), Arc::downgrade(&lock));
        lock
    }
}

fn blob_unknown(digest: &Digest) -> RegistryError {
    RegistryError::not_found(
        ErrorCode::BlobUnknown,
        format!("blob {digest} unknown to registry"),
    )
}
