//! Blobs in a repository: existence, ranged reads, links, mounts and (un)linking deletes.

use oci::Digest;

use super::{blob_unknown, Registry};
use crate::error::RegistryError;
use crate::paths;
use crate::storage::{ByteStream, StorageDriver, StorageError};

impl<S: StorageDriver> Registry<S> {
    /// The size of a blob the repository links, or BLOB_UNKNOWN.
    pub async fn blob_size(&self, name: &str, digest: &Digest) -> Result<u64, RegistryError> {
        if !self.exists(&paths::layer_link(name, digest)).await? {
            return Err(blob_unknown(digest));
        }
        match self.driver.stat(&paths::blob_data(digest)).await {
            Ok(meta) => Ok(meta.size),
            Err(e) if e.is_not_found() => Err(blob_unknown(digest)),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens a linked blob for reading `len` bytes from `offset`; returns its total size too.
    pub async fn open_blob(
        &self,
        name: &str,
        digest: &Digest,
        offset: u64,
        len: Option<u64>,
    ) -> Result<(u64, ByteStream), RegistryError> {
        if !self.exists(&paths::layer_link(name, digest)).await? {
            return Err(blob_unknown(digest));
        }
        match self
            .driver
            .reader(&paths::blob_data(digest), offset, len)
            .await
        {
            Ok(opened) => Ok(opened),
            Err(StorageError::NotFound(_)) => Err(blob_unknown(digest)),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the blob's bytes are stored, in any repository.
    pub async fn blob_stored(&self, digest: &Digest) -> Result<bool, RegistryError> {
        self.exists(&paths::blob_data(digest)).await
    }

    pub(super) async fn link_blob(&self, name: &str, digest: &Digest) -> Result<(), RegistryError> {
        self.write_link(&paths::layer_link(name, digest), digest)
            .await
    }

    /// Stores a blob whose bytes are already in a file from the driver's
    /// `local_temp_file`, verified against `digest` by the caller (the mirror's fill), and
    /// links it into the repository: the bytes are named in place, never copied or rehashed.
    /// The upload limit applies as it does to uploads.
    pub async fn adopt_blob(
        &self,
        name: &str,
        digest: &Digest,
        file: &std::fs::File,
        size: u64,
    ) -> Result<(), RegistryError> {
        let limit = self.settings.upload_max_bytes;
        if limit > 0 && size > limit {
            return Err(super::uploads::over_upload_limit(limit));
        }
        if !self.blob_stored(digest).await? {
            self.driver
                .adopt_file(file, &paths::blob_data(digest))
                .await?;
        }
        self.link_blob(name, digest).await
    }

    /// Cross-repository mount (spec.md "Mounting a blob from another repository"). With
    /// `from`, the blob must be linked there; without it, any stored blob can be mounted.
    /// Returns false when the blob cannot be mounted and an upload should start instead.
    pub async fn mount_blob(
        &self,
        name: &str,
        digest: &Digest,
        from: Option<&str>,
    ) -> Result<bool, RegistryError> {
        let available = match from {
            Some(from) => {
                self.exists(&paths::layer_link(from, digest)).await?
                    && self.blob_stored(digest).await?
            }
            None => self.blob_stored(digest).await?,
        };
        if available {
            self.link_blob(name, digest).await?;
        }
        Ok(available)
    }

    /// Unlinks the blob from the repository; its bytes stay for other repositories until
    /// garbage collection, so concurrent readers never see a torn blob.
    pub async fn delete_blob(&self, name: &str, digest: &Digest) -> Result<(), RegistryError> {
        self.delete_allowed()?;
        let link = paths::layer_link(name, digest);
        if !self.exists(&link).await? {
            return Err(blob_unknown(digest));
        }
        let link_dir = link.trim_end_matches("/link");
        self.delete_if_present(link_dir).await?;
        Ok(())
    }
}
