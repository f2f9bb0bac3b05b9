//! A build cache in a registry repository (`rbuild build --cache-to/--cache-from
//! type=registry,ref=…`): the builder's [`CacheBackend`] over this client. The cache is an OCI
//! artifact (image-store's build_cache.rs); here it is only a manifest and blobs to move.

use std::fmt;
use std::sync::Arc;

use image_store::{CacheBackend, CacheBackendError, Store};
use oci::{Descriptor, Reference};

use crate::progress::{Progress, Silent};
use crate::pull::{fetch_blob, fetch_manifest_bytes};
use crate::push::{push_descriptor, PushOptions};
use crate::session::Client;

pub struct RegistryCache {
    client: Arc<Client>,
    reference: Reference,
}

impl RegistryCache {
    /// The cache at `reference` (a tag: each export moves it), reached through `client`.
    pub fn new(client: Arc<Client>, reference: Reference) -> RegistryCache {
        RegistryCache { client, reference }
    }
}

impl fmt::Debug for RegistryCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegistryCache({})", self.reference)
    }
}

impl CacheBackend for RegistryCache {
    fn describe(&self) -> String {
        self.reference.to_string()
    }

    fn read_manifest(&self) -> Result<Option<Vec<u8>>, CacheBackendError> {
        let found = fetch_manifest_bytes(&self.client, &self.reference)?;
        Ok(found.map(|(_, bytes)| bytes))
    }

    fn fetch_blob(&self, store: &Store, blob: &Descriptor) -> Result<(), CacheBackendError> {
        fetch_blob(&self.client, store, &self.reference, blob, &Silent)?;
        Ok(())
    }

    fn write(&self, store: &Store, manifest: &Descriptor) -> Result<(), CacheBackendError> {
        let progress: Arc<dyn Progress> = Arc::new(Silent);
        let options = PushOptions::default();
        push_descriptor(
            &self.client,
            store,
            manifest,
            &self.reference,
            &options,
            &progress,
        )?;
        Ok(())
    }
}
