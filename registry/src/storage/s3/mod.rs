//! The S3 backend (any S3-compatible server) through object_store, holding the same keys as
//! distribution's s3 driver (`<rootdirectory>/docker/registry/v2/…`, see `paths.rs`), so one
//! bucket can be served by several rregistry replicas at once: everything a request needs is
//! in the bucket, nothing in a replica's memory (see `writer.rs` for uploads).
//!
//! S3 has objects, not directories: a "directory" is a key prefix, present while any object
//! lies under it. `rename` is a copy then DELETE: CopyObject, or for large objects a copy in
//! parts (`part_copy.rs`); either is atomic, so the destination is whole or absent. Failed requests (5xx, timeouts, broken connections) are retried with
//! backoff by object_store (`maxretries`, `retrytimeout`, `requesttimeout`), then surface as
//! [`StorageError::Backend`], which the registry answers with a 500 and the spec's error body.
//!
//! With redirects on (`storage.redirect.disable` not set), blob GETs and HEADs are answered
//! with a 307 to a presigned URL of the object (see `redirect_url`), so blob bytes flow from S3
//! to the client directly, as with distribution's s3 driver.

pub mod config;
mod part_copy;
mod writer;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3;
use object_store::client::{HttpConnector, ReqwestConnector};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{GetOptions, GetRange, ObjectStore};

pub use config::S3Config;
use part_copy::PartCopier;
pub use writer::S3Writer;

use super::{check_path, ByteStream, Metadata, StorageDriver, StorageError, StorageResult};

#[derive(Debug, Clone)]
pub struct S3Driver {
    store: Arc<AmazonS3>,
    /// The key prefix of every object, without slashes at either end; may be empty.
    root: Arc<str>,
    chunk_size: usize,
    bucket: Arc<str>,
    /// Whether `redirect_url` presigns (the server's `storage.redirect.disable` turns it off).
    redirects: bool,
    /// How `rename` copies objects too large for one CopyObject.
    part_copier: Arc<PartCopier>,
}

/// How long a presigned blob URL stays valid: distribution's s3 driver uses 20 minutes. A
/// client that starts its download within that time finishes it (S3 checks at the start).
const REDIRECT_EXPIRY: Duration = Duration::from_secs(20 * 60);

impl S3Driver {
    /// Builds the client; no request is sent until the first storage call. Redirects are off
    /// until [`S3Driver::with_redirects`] turns them on.
    pub fn new(config: &S3Config) -> StorageResult<Self> {
        config.validate().map_err(|message| StorageError::Backend {
            path: String::new(),
            source: message.into(),
        })?;
        let store = config
            .build_store()
            .map_err(|e| storage_error(&config.bucket, e))?;
        let http = ReqwestConnector::default()
            .connect(&config.client_options())
            .map_err(|e| storage_error(&config.bucket, e))?;
        let part_copier = PartCopier {
            http,
            region: config.region.clone(),
            threshold: config.multipartcopythresholdsize,
            part_size: config.multipartcopychunksize,
            concurrency: config.multipartcopymaxconcurrency,
            retries: config.maxretries,
            encryption: config.encryption_headers(),
        };
        Ok(S3Driver {
            store: Arc::new(store),
            root: config.root_prefix().into(),
            chunk_size: usize::try_from(config.chunksize).unwrap_or(usize::MAX),
            bucket: config.bucket.as_str().into(),
            redirects: false,
            part_copier: Arc::new(part_copier),
        })
    }

    /// Whether blob reads are redirected to presigned S3 URLs (`StorageDriver::redirect_url`).
    pub fn with_redirects(self, enabled: bool) -> Self {
        S3Driver {
            redirects: enabled,
            ..self
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn key(&self, path: &str) -> StorageResult<Path> {
        check_path(path)?;
        Ok(if self.root.is_empty() {
            Path::from(path)
        } else {
            Path::from(format!("{}/{path}", self.root))
        })
    }
}

/// object_store's errors as the driver's: a missing object is `NotFound`, the rest (after
/// object_store's retries) a backend failure.
fn storage_error(path: &str, e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound(path.to_string()),
        e => StorageError::Backend {
            path: path.to_string(),
            source: Box::new(e),
        },
    }
}

fn byte_stream(
    stream: futures_util::stream::BoxStream<'static, object_store::Result<Bytes>>,
) -> ByteStream {
    Box::pin(stream.map_err(std::io::Error::other))
}

impl StorageDriver for S3Driver {
    type Writer = S3Writer;

    fn name(&self) -> &'static str {
        "s3"
    }

    async fn get_content(&self, path: &str) -> StorageResult<Bytes> {
        let key = self.key(path)?;
        let got = self
            .store
            .get(&key)
            .await
            .map_err(|e| storage_error(path, e))?;
        got.bytes().await.map_err(|e| storage_error(path, e))
    }

    async fn put_content(&self, path: &str, content: Bytes) -> StorageResult<()> {
        let key = self.key(path)?;
        // One PUT: S3 replaces the object atomically.
        self.store
            .put(&key, content.into())
            .await
            .map(|_| ())
            .map_err(|e| storage_error(path, e))
    }

    async fn reader(
        &self,
        path: &str,
        offset: u64,
        len: Option<u64>,
    ) -> StorageResult<(u64, ByteStream)> {
        let key = self.key(path)?;
        if offset == 0 && len.is_none() {
            // The common case (a whole blob) in one request: the size comes with the body, so
            // a concurrent replace gives the new version whole, with its own size.
            let got = self
                .store
                .get(&key)
                .await
                .map_err(|e| storage_error(path, e))?;
            return Ok((got.meta.size, byte_stream(got.into_stream())));
        }
        // S3 refuses empty and out-of-bounds ranges, so the size decides first.
        let size = self
            .store
            .head(&key)
            .await
            .map_err(|e| storage_error(path, e))?
            .size;
        if offset > size {
            return Err(StorageError::InvalidOffset {
                path: path.to_string(),
                offset,
                size,
            });
        }
        let end = offset + len.map_or(size - offset, |l| l.min(size - offset));
        if end == offset {
            return Ok((size, Box::pin(futures_util::stream::empty())));
        }
        let got = self
            .store
            .get_opts(
                &key,
                GetOptions {
                    range: Some(GetRange::Bounded(offset..end)),
                    ..GetOptions::default()
                },
            )
            .await
            .map_err(|e| storage_error(path, e))?;
        Ok((size, byte_stream(got.into_stream())))
    }

    async fn writer(&self, path: &str, append: bool) -> StorageResult<S3Writer> {
        let key = self.key(path)?;
        let (store, owned_path) = (self.store.clone(), path.to_string());
        if append {
            if let Some(stored) = writer::read_stored(&store, &key, path).await? {
                return S3Writer::resume(store, key, owned_path, self.chunk_size, stored).await;
            }
        }
        let mut writer = S3Writer::new(store, key.clone(), owned_path, self.chunk_size);
        if append {
            // A committed object: its bytes become the start of a new one (see writer.rs).
            match self.store.get(&key).await {
                Ok(existing) => {
                    let mut stream = existing.into_stream();
                    while let Some(chunk) = stream.next().await {
                        let chunk = chunk.map_err(|e| storage_error(path, e))?;
                        crate::storage::FileWriter::write(&mut writer, chunk).await?;
                    }
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(storage_error(path, e)),
            }
        }
        Ok(writer)
    }

    async fn stat(&self, path: &str) -> StorageResult<Metadata> {
        let key = self.key(path)?;
        match self.store.head(&key).await {
            Ok(meta) => {
                return Ok(Metadata {
                    size: meta.size,
                    is_dir: false,
                    modified: SystemTime::from(meta.last_modified),
                })
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(storage_error(path, e)),
        }
        // A directory exists while any object lies under it; the first one tells.
        match self.store.list(Some(&key)).next().await {
            Some(Ok(_)) => Ok(Metadata {
                size: 0,
                is_dir: true,
                // S3 keeps no time for a prefix.
                modified: SystemTime::now(),
            }),
            Some(Err(e)) => Err(storage_error(path, e)),
            None => Err(StorageError::NotFound(path.to_string())),
        }
    }

    async fn written_size(&self, path: &str) -> StorageResult<u64> {
        let key = self.key(path)?;
        match writer::read_stored(&self.store, &key, path).await? {
            Some(stored) => Ok(stored.size),
            None => self.stat(path).await.map(|meta| meta.size),
        }
    }

    async fn seal(&self, path: &str) -> StorageResult<()> {
        let key = self.key(path)?;
        let Some(stored) = writer::read_stored(&self.store, &key, path).await? else {
            return Ok(());
        };
        let sealed = async {
            let (store, owned_path) = (self.store.clone(), path.to_string());
            let writer = S3Writer::resume(
                store,
                key.clone(),
                owned_path,
                self.chunk_size,
                stored.clone(),
            )
            .await?;
            crate::storage::FileWriter::commit(writer).await
        }
        .await;
        if sealed.is_err() {
            // Completed before, but its state outlived it (a crash between the two): tidy up.
            if let Ok(meta) = self.store.head(&key).await {
                if meta.size == stored.size {
                    return writer::forget_stored(&self.store, &key, &stored, path).await;
                }
            }
        }
        sealed
    }

    async fn list(&self, path: &str) -> StorageResult<Vec<String>> {
        let key = self.key(path)?;
        let listed = self
            .store
            .list_with_delimiter(Some(&key))
            .await
            .map_err(|e| storage_error(path, e))?;
        let names: Vec<String> = listed
            .common_prefixes
            .iter()
            .chain(listed.objects.iter().map(|o| &o.location))
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        if names.is_empty() {
            return Err(StorageError::NotFound(path.to_string()));
        }
        Ok(names)
    }

    async fn rename(&self, from: &str, to: &str) -> StorageResult<()> {
        let (from_key, to_key) = (self.key(from)?, self.key(to)?);
        let size = self
            .store
            .head(&from_key)
            .await
            .map_err(|e| storage_error(from, e))?
            .size;
        // Both are atomic: `to` is the old object or the whole new one.
        if self.part_copier.in_parts(size) {
            self.part_copier
                .copy(&self.store, &self.bucket, &from_key, &to_key, size)
                .await
                .map_err(|message| StorageError::Backend {
                    path: from.to_string(),
                    source: message.into(),
                })?;
        } else {
            self.store
                .copy(&from_key, &to_key)
                .await
                .map_err(|e| storage_error(from, e))?;
        }
        self.store
            .delete(&from_key)
            .await
            .map_err(|e| storage_error(from, e))
    }

    async fn delete(&self, path: &str) -> StorageResult<()> {
        let key = self.key(path)?;
        let mut doomed: Vec<Path> = self
            .store
            .list(Some(&key))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|e| storage_error(path, e))?;
        match self.store.head(&key).await {
            Ok(_) => doomed.push(key),
            Err(object_store::Error::NotFound { .. }) => {
                // A suspended object is only its state (writer.rs).
                let parts = writer::parts_key(&key);
                if self.store.head(&parts).await.is_ok() {
                    doomed.push(parts);
                }
            }
            Err(e) => return Err(storage_error(path, e)),
        }
        // Suspended uploads being deleted are aborted, so their parts go too.
        let mut tails = Vec::new();
        for parts in doomed
            .iter()
            .filter(|k| k.as_ref().ends_with(writer::PARTS_SUFFIX))
        {
            tails.extend(writer::abort_stored(&self.store, parts).await);
        }
        doomed.extend(tails);
        doomed.sort();
        doomed.dedup();
        if doomed.is_empty() {
            return Err(StorageError::NotFound(path.to_string()));
        }
        // Batched (DeleteObjects, up to 1000 keys a request). Not atomic across keys: a
        // reader may see part of a tree while it goes, which the registry tolerates (a
        // session without its marker is unknown, a link without its directory absent).
        let deletes = futures_util::stream::iter(doomed.into_iter().map(Ok)).boxed();
        self.store
            .delete_stream(deletes)
            .try_collect::<Vec<_>>()
            .await
            .map(|_| ())
            .map_err(|e| storage_error(path, e))
    }

    async fn redirect_url(
        &self,
        path: &str,
        method: &axum::http::Method,
    ) -> StorageResult<Option<String>> {
        if !self.redirects {
            return Ok(None);
        }
        let key = self.key(path)?;
        // SigV4 query signing: local work, plus a credential fetch only when the credentials
        // come from a provider (web identity, instance metadata) and its cache has expired.
        let url = self
            .store
            .signed_url(method.clone(), &key, REDIRECT_EXPIRY)
            .await
            .map_err(|e| storage_error(path, e))?;
        Ok(Some(url.into()))
    }
}
